"""The shipped broker ACL with every vendor's real bridge, each on its simulator over real HTTP and
connected as its own user (``bridge-<vendor>``), and clients of the other roles (issue 16).

- Secrets: every sensitive action of every vendor is sent by an ``operator``, answered on the
  contract's response topic and on a v5 Response Topic; a ``dashboard`` and a ``homeassistant``
  subscribed to ``#`` see none of the secrets that crossed the wire between a bridge and its vendor
  cloud (recorded by a proxy in front of each simulator: tokens, tickets, local keys, bluetooth keys,
  card ids, client secrets), nor a command topic, nor an answer.
- Isolation: the Segway bridge's credential cannot command OKAI devices, read their commands, nor
  publish as the OKAI bridge (the broker answers "not authorized" and nothing reaches the OKAI bridge).

The broker fixture and helpers are those of ``tests/test_broker_acl.py``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiomqtt
import anyio
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests import test_broker_acl
from tests.test_broker_acl import BASE, Broker, connect, is_command
from twin.adapter import Adapter, SimulatorKit
from twin.asgi import serve_asgi
from twin.config import MqttSettings, load_vendor_settings
from twin.homeassistant import HomeAssistantSettings
from twin.publisher import paho_of
from twin.registry import ADAPTERS, load_adapter_class
from twin.runtime import BridgeRuntime
from twin.testing import v5_reply

pytestmark = test_broker_acl.pytestmark
#: the private mosquitto with the shipped configuration, ACL and passwords
broker = test_broker_acl.broker
production_certs = test_broker_acl.production_certs

#: arguments of every sensitive action, by (vendor, action); ``ctx`` gives values learned on the way.
#: A vendor's new sensitive action fails the test until it is listed here.
SENSITIVE: dict[tuple[str, str], Callable[[Context], dict[str, Any]]] = {
    ("segway", "set_bluetooth_key"): lambda ctx: {"key": ctx.chosen(lambda: uuid.uuid4().hex[:8])},
    ("segway", "get_bluetooth_key"): lambda ctx: {},
    ("tuya", "issue_card"): lambda ctx: {"card_id": ctx.chosen(lambda: f"CARD-{uuid.uuid4().hex[:12]}")},
    ("tuya", "list_user_devices"): lambda ctx: {"uid": ctx.tuya_owner},
}


# -- the vendor side: simulators behind a recording proxy ---------------------------------------


class Recorder:
    """An ASGI app in front of a simulator that keeps every exchange (headers, query, bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[tuple[Scope, bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request, response = bytearray(), bytearray()

        async def receive_recorded() -> Message:
            message = await receive()
            request.extend(message.get("body", b""))
            return message

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.body":
                response.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_recorded, send_recorded)
        finally:
            self.exchanges.append((scope, bytes(request), bytes(response)))


def _secret_name(name: str) -> bool:
    name = name.lower().replace("-", "_")
    if name in ("token_type", "lock_card_id") or "expire" in name:
        return False
    return any(word in name for word in ("token", "secret", "password", "ticket", "authorization")) or (
        name.endswith("key") or name in ("sign", "card_id")
    )


def _collect(value: Any, into: set[str], *, named: bool = False) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, into, named=_secret_name(str(key)))
    elif isinstance(value, list):
        for item in value:
            _collect(item, into, named=named)
    elif named and isinstance(value, str) and len(value) >= 6:
        into.add(value)
        if value.lower().startswith(("bearer ", "basic ")):
            credential = value.split(" ", 1)[1]
            into.add(credential)
            if value.lower().startswith("basic "):
                into.update(p for p in base64.b64decode(credential).decode().split(":") if len(p) >= 6)


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return dict(parse_qsl(raw.decode(errors="replace")))


def vendor_secrets(recorder: Recorder) -> set[str]:
    """Every value of a secret-named field, header or parameter the bridge and its cloud exchanged."""
    found: set[str] = set()
    for scope, request, response in recorder.exchanges:
        _collect({k.decode(): v.decode() for k, v in scope["headers"]}, found)
        _collect(dict(parse_qsl(scope["query_string"].decode())), found)
        _collect(_body(request), found)
        _collect(_body(response), found)
    return found


# -- the MQTT side ------------------------------------------------------------------------------


class Watch:
    """Every message one client receives, kept in order, with a way to wait for one."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []
        self._changed = anyio.Event()
        self._scope = anyio.CancelScope()

    async def run(self) -> None:
        with self._scope:
            async for message in self.client.messages:
                self.messages.append(message)
                self._changed.set()
                self._changed = anyio.Event()

    def stop(self) -> None:
        self._scope.cancel()

    async def first(self, predicate: Callable[[aiomqtt.Message], bool], *, timeout: float = 20) -> aiomqtt.Message:
        with anyio.fail_after(timeout):
            while True:
                found = next((m for m in self.messages if predicate(m)), None)
                if found is not None:
                    return found
                await self._changed.wait()


def body(message: aiomqtt.Message) -> dict[str, Any]:
    try:
        parsed = json.loads(message.payload) if isinstance(message.payload, bytes) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def shown(message: aiomqtt.Message) -> bytes:
    """Everything a subscriber learns from a message: topic, payload and properties."""
    props = message.properties
    parts = [message.topic.value.encode(), message.payload if isinstance(message.payload, bytes) else b""]
    for name in ("ResponseTopic", "CorrelationData", "UserProperty"):
        value = getattr(props, name, None) if props is not None else None
        parts.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(parts)


@dataclass
class Vendor:
    name: str
    kit: SimulatorKit
    recorder: Recorder
    runtime: BridgeRuntime

    @property
    def adapter(self) -> Adapter[Any]:
        return self.runtime.adapter

    @property
    def device(self) -> str:
        return self.kit.device_ids[0]


@asynccontextmanager
async def vendors_running(broker: Broker, tmp_path: Path, names: list[str]) -> AsyncIterator[dict[str, Vendor]]:
    """Each vendor's simulator behind a recorder, and its bridge connected as ``bridge-<vendor>``."""
    async with AsyncExitStack() as stack:
        running: dict[str, Vendor] = {}
        for name in names:
            cls = load_adapter_class(name)
            kit = cls.simulator(devices=2)
            assert kit is not None, f"{name} has no simulator"
            recorder = Recorder(kit.app)
            served = await stack.enter_async_context(serve_asgi(recorder))
            user = f"bridge-{name}"
            runtime = BridgeRuntime(
                adapter=cls(settings=load_vendor_settings(cls.settings_model, kit.settings(served.url))),
                mqtt=MqttSettings(url=broker.url, username=user, password=SecretStr(broker.passwords[user])),
                data_dir=tmp_path / "bridges",
                base_topic=BASE,
                homeassistant=HomeAssistantSettings(),
            )
            running[name] = Vendor(name, kit, recorder, runtime)
        tg = await stack.enter_async_context(anyio.create_task_group())  # ends before the simulators
        for vendor in running.values():
            tg.start_soon(vendor.runtime.run)
        with anyio.fail_after(30):
            for vendor in running.values():
                await vendor.runtime.ready.wait()
                await vendor.runtime.connected.wait()
        try:
            yield running
        finally:
            tg.cancel_scope.cancel()


@dataclass
class Context:
    """Values the test chose or learned, which must stay with the operator."""

    tuya_owner: str = ""
    chosen_values: set[str] = field(default_factory=set)

    def chosen(self, make: Callable[[], str]) -> str:
        value = make()
        self.chosen_values.add(value)
        return value


class Operator:
    """An operator client that sends commands and waits for their final answers."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.reply_tree = f"locktwin-replies/operator/{uuid.uuid4().hex}"
        #: transactions sent with a v5 Response Topic
        self.private: set[str] = set()

    async def send(
        self, vendor: str, device: str, leaf: str, args: dict[str, Any], *, private: bool = False
    ) -> dict[str, Any]:
        transaction = f"t-{uuid.uuid4().hex[:12]}"
        props = v5_reply(f"{self.reply_tree}/{transaction}", transaction.encode()) if private else None
        if private:
            self.private.add(transaction)
        topic = f"{BASE}/{vendor}/{device}/{leaf}"
        await self.watch.client.publish(
            topic, json.dumps({**args, "transaction": transaction}), qos=1, properties=props
        )
        answer = await self.watch.first(
            lambda m: body(m).get("transaction") == transaction and body(m).get("status") not in (None, "accepted")
        )
        where = answer.topic.value
        assert where.startswith(self.reply_tree) if private else "/response/" in where, where
        return body(answer)


def barrier_action(vendor: Vendor) -> str:
    """A harmless action of this vendor's device: idempotent, not sensitive, no arguments."""
    capabilities = vendor.runtime.engine.devices[vendor.device].info.capabilities
    for name, spec in vendor.adapter.actions().items():
        if spec.sensitive or not spec.idempotent or (spec.capability and spec.capability not in capabilities):
            continue
        try:
            spec.arguments.model_validate({})
        except ValueError:
            continue
        return name
    raise AssertionError(f"{vendor.name} has no action usable as a barrier")


# -- secrets ------------------------------------------------------------------------------------


async def test_read_only_roles_see_no_secret_of_any_vendor(broker: Broker, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        watches: dict[str, Watch] = {}
        for role in ("dashboard", "homeassistant", "operator"):
            client = await stack.enter_async_context(connect(broker, role))
            await client.subscribe("#", qos=1)
            await client.subscribe(f"{BASE}/#", qos=1)
            watches[role] = Watch(client)
        tg = await stack.enter_async_context(anyio.create_task_group())  # ends before the clients close
        for watch in watches.values():
            tg.start_soon(watch.run)
        spies = {role: watches[role] for role in ("dashboard", "homeassistant")}
        await watches["operator"].client.subscribe("locktwin-replies/operator/#", qos=1)
        operator = Operator(watches["operator"])
        running = await stack.enter_async_context(vendors_running(broker, tmp_path, list(ADAPTERS)))

        # the actions whose request or answer carries a secret: sensitive ones (never kept), and those
        # whose arguments are redacted wherever they are shown (a card id)
        sensitive = {
            (v.name, a) for v in running.values() for a, spec in v.adapter.actions().items() if spec.carries_secrets
        }
        assert sensitive == set(SENSITIVE), "list every sensitive action in SENSITIVE, with its arguments"
        ctx = Context()
        tuya = running["tuya"].device
        users = await operator.send("tuya", tuya, "request/list_users", {})
        ctx.tuya_owner = next(u["uid"] for u in users["data"]["records"] if u["user_type"] == 50)
        # a lock or unlock takes a ticket from the cloud (ticket_id, ticket_key)
        assert (await operator.send("tuya", tuya, "set", {"lock": "UNLOCKED"}))["status"] == "succeeded"
        answers: list[dict[str, Any]] = []
        for (vendor, action), arguments in SENSITIVE.items():  # in order: a key is set, then read
            for private in (False, True):  # the contract's response topic, then a v5 Response Topic
                answer = await operator.send(
                    vendor, running[vendor].device, f"request/{action}", arguments(ctx), private=private
                )
                assert answer["status"] == "succeeded", (vendor, action, answer)
                answers.append(answer)
        # every Smartcar call carries the access token of a linked account
        await operator.send("smartcar", running["smartcar"].device, "request/get_security", {})

        # Barrier: a later command of each bridge, whose event both spies may read (see test_broker_acl).
        for vendor in running.values():
            transaction = f"barrier-{vendor.name}"
            topic = f"{BASE}/{vendor.name}/{vendor.device}/request/{barrier_action(vendor)}"
            await operator.watch.client.publish(topic, json.dumps({"transaction": transaction}), qos=1)
            event = f"{BASE}/{vendor.name}/{vendor.device}/event"
            for spy in spies.values():
                await spy.first(
                    lambda m, e=event, t=transaction: m.topic.value == e and body(m)["data"]["transaction"] == t
                )
        for watch in watches.values():
            watch.stop()

    secrets = set(ctx.chosen_values)
    for vendor in running.values():
        secrets |= vendor_secrets(vendor.recorder)
        secrets |= {str(v) for k, v in vendor.kit.settings("http://x").items() if _secret_name(k) and v}
    # not vacuous: the chosen values went through a bridge to its vendor (so they were in requests),
    # the secrets in the sensitive answers reached the operator, and each kind of secret crossed the wire
    assert ctx.chosen_values <= set().union(*(vendor_secrets(v.recorder) for v in running.values()))
    answered: set[str] = set()
    for answer in answers:
        _collect(answer["data"], answered)
    local_keys = {d["local_key"] for a in answers for d in (a["data"] or {}).get("records", []) if "local_key" in d}
    assert local_keys and local_keys <= answered <= secrets
    assert ctx.chosen_values & answered  # the bluetooth key set, then read back
    got = b"\n".join(shown(m) for m in watches["operator"].messages)
    for value in answered:
        assert value.encode() in got, value
    # an answer sent to a v5 Response Topic goes there only
    on_contract = {body(m).get("transaction") for m in watches["operator"].messages if "/response/" in m.topic.value}
    assert operator.private and not operator.private & on_contract
    tuya_http = [
        json.loads(r) for s, _, r in running["tuya"].recorder.exchanges if s["path"].endswith("/password-ticket")
    ]
    assert tuya_http and {t["result"]["ticket_id"] for t in tuya_http} <= secrets
    assert any(
        "access_token" in json.loads(r or b"{}")
        for s, _, r in running["smartcar"].recorder.exchanges
        if s["path"] == "/oauth/token"
    )

    for role, spy in spies.items():
        assert len(spy.messages) > 20, role  # states, twins, events, device lists, configs
        for message in spy.messages:
            topic = message.topic.value
            assert not is_command(topic) and "/response/" not in topic and not topic.startswith("locktwin-replies/"), (
                role,
                topic,
            )
            leaked = [s for s in secrets if s.encode() in shown(message)]
            assert not leaked, (role, topic, leaked)


# -- one credential per vendor ------------------------------------------------------------------


def puback_codes(client: aiomqtt.Client) -> list[Any]:
    """The reason codes of the PUBACKs this client receives (aiomqtt does not return them)."""
    codes: list[Any] = []
    inner = paho_of(client)
    forward = inner.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        codes.append(reason)
        if forward is not None:
            forward(c, userdata, mid, reason, props)

    inner.on_publish = on_publish
    return codes


async def test_segway_credential_cannot_command_okai_nor_speak_for_its_bridge(broker: Broker, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        dashboard = Watch(await stack.enter_async_context(connect(broker, "dashboard")))
        segway = Watch(await stack.enter_async_context(connect(broker, "bridge-segway")))
        operator = Operator(Watch(await stack.enter_async_context(connect(broker, "operator"))))
        watches = (dashboard, segway, operator.watch)
        await dashboard.client.subscribe("#", qos=1)
        await segway.client.subscribe("#", qos=1)
        await operator.watch.client.subscribe(f"{BASE}/okai/+/response/#", qos=1)
        tg = await stack.enter_async_context(anyio.create_task_group())  # ends before the clients close
        for watch in watches:
            tg.start_soon(watch.run)
        running = await stack.enter_async_context(vendors_running(broker, tmp_path, ["okai"]))
        okai = running["okai"]
        device = okai.device
        await dashboard.first(lambda m: m.topic.value == f"{BASE}/bridge/okai/state" and m.payload == b"online")
        codes = puback_codes(segway.client)

        # what a stolen Segway credential would try against OKAI
        forged = {
            f"{BASE}/okai/{device}/set": (b'{"lock":"UNLOCKED","transaction":"t-forged"}', False),
            f"{BASE}/okai/{device}/request/get_status": (b'{"transaction":"t-forged-get"}', False),
            f"{BASE}/bridge/okai/state": (b"offline", True),
            f"{BASE}/okai/{device}/state": (b'{"lock":"UNLOCKED"}', True),
            f"{BASE}/okai/{device}/response/set": (b'{"transaction":"t-op","status":"failed"}', False),
            f"homeassistant/lock/locktwin_okai/{device}/config": (b'{"command_topic":"elsewhere"}', True),
            "homeassistant/binary_sensor/locktwin_bridge_okai/connectivity/config": (b"{}", True),
            f"homeassistant/lock/locktwin_okai_{device}/lock/config": (b"{}", True),  # the old layout
        }
        for topic, (payload, retain) in forged.items():
            await segway.client.publish(topic, payload, qos=1, retain=retain)
        assert [getattr(code, "value", code) for code in codes] == [0x87] * len(forged)  # not authorized
        await segway.client.publish(f"{BASE}/bridge/segway/state", b"online", qos=1, retain=True)
        assert getattr(codes[-1], "value", None) == 0  # its own topics: allowed

        # an operator's OKAI command, which the Segway credential must not even read
        answer = await operator.send("okai", device, "request/get_status", {})
        assert answer["status"] == "succeeded"
        barrier = f"barrier-{uuid.uuid4().hex[:6]}"
        await operator.watch.client.publish(
            f"{BASE}/okai/{device}/request/get_status", json.dumps({"transaction": barrier}), qos=1
        )
        event = f"{BASE}/okai/{device}/event"
        await dashboard.first(lambda m: m.topic.value == event and body(m)["data"]["transaction"] == barrier)
        await segway.first(lambda m: m.topic.value == f"{BASE}/bridge/segway/state")
        store = okai.runtime.store
        assert store.command_by_transaction(device, "t-forged") is None
        assert store.command_by_transaction(device, "t-forged-get") is None
        for watch in watches:
            watch.stop()

    assert not [m for m in segway.messages if m.topic.value.startswith((f"{BASE}/okai/", f"{BASE}/bridge/okai/"))]
    switched = [s for s, _, _ in okai.recorder.exchanges if "switch" in s["path"].lower()]
    assert switched == []  # no lock or unlock reached the OKAI cloud
    seen = {m.topic.value: m.payload for m in dashboard.messages}
    assert seen[f"{BASE}/bridge/okai/state"] == b"online"
    assert all(body(m).get("transaction") != "t-op" for m in operator.watch.messages)
    assert not [m for m in dashboard.messages if m.payload in {p for p, _ in forged.values()}]
