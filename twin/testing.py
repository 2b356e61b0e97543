"""Test support: a real broker and a bridge driven over MQTT (used by core and vendor tests).

``broker_url()`` picks the broker the way CI does: ``MQTT_URL`` when set, otherwise a private
``mosquitto`` on a free port (:class:`MosquittoBroker`, which tests may also stop and restart),
otherwise a testcontainers mosquitto where Docker exists.

:class:`BridgeHarness` runs a :class:`~twin.runtime.BridgeRuntime` in-process on a unique base
topic with a real SQLite store, and an observer client that records every message under it::

    async with BridgeHarness(adapter=MyAdapter(settings=...), broker_url=url, data_dir=tmp_path) as h:
        final = await h.set("dev-1", {"lock": "LOCKED"})        # waits for the final answer
        assert final["status"] == "succeeded"
        state = await h.wait_retained("dev-1", "state", lambda s: s["lock"] == "LOCKED")

Instead of ``broker_url``, ``mqtt`` gives the whole :class:`~twin.config.MqttSettings` (TLS,
client certificate, protocol) that the bridge and the observer connect with; both get their
clients from :func:`twin.mqtt.mqtt_client`, as every locktwin process does.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from twin.adapter import Adapter
from twin.broker import MosquittoBroker, free_port
from twin.config import BridgeOptions, MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.mqtt import mqtt_client
from twin.runtime import BridgeRuntime
from twin.shard import Shard

__all__ = [
    "FINAL",
    "BridgeHarness",
    "MosquittoBroker",
    "broker_from_environment",
    "free_port",
    "json_or_text",
    "v5_reply",
]

#: the statuses of a final answer
FINAL = {"succeeded", "failed", "expired", "superseded", "rejected"}


def broker_from_environment() -> tuple[str, Callable[[], None]]:
    """(url, cleanup) of the broker tests should use."""
    if url := os.environ.get("MQTT_URL"):
        return url, lambda: None
    if MosquittoBroker.available():
        broker = MosquittoBroker()
        broker.start()
        return broker.url, broker.stop
    from testcontainers.core.container import DockerContainer  # pragma: no cover - no Docker here

    container = DockerContainer("eclipse-mosquitto:2").with_exposed_ports(1883)
    container.with_command("mosquitto -c /mosquitto-no-auth.conf")
    container.start()
    url = f"mqtt://{container.get_container_host_ip()}:{container.get_exposed_port(1883)}"
    return url, container.stop


class BridgeHarness:
    """A bridge under test plus an observer of everything it publishes."""

    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        broker_url: str | None = None,
        data_dir: Path,
        options: BridgeOptions | None = None,
        base_topic: str | None = None,
        username: str | None = None,
        password: str | None = None,
        homeassistant: HomeAssistantSettings | None = None,
        shard: Shard | None = None,
        mqtt: MqttSettings | None = None,
    ) -> None:
        if (broker_url is None) == (mqtt is None):
            raise TypeError("BridgeHarness takes broker_url or mqtt")
        self.adapter = adapter
        self.mqtt = mqtt or MqttSettings(url=str(broker_url))
        self.broker_url = self.mqtt.url
        self.data_dir = data_dir
        self.options = options
        self.base = base_topic or f"lt-test-{uuid.uuid4().hex[:10]}"
        self.vendor = adapter.vendor
        self.shard = shard
        self.username = username
        self.password = password
        # Discovery under the test's own base topic, so tests sharing a broker do not collide.
        self.homeassistant = homeassistant or HomeAssistantSettings(prefix=f"{self.base}/homeassistant")
        self.messages: list[tuple[str, bytes, bool, Any]] = []
        self.retained: dict[str, bytes] = {}
        self._changed = anyio.Event()
        self.runtime: BridgeRuntime | None = None
        self._client: aiomqtt.Client | None = None

    def _mqtt(self) -> MqttSettings:
        # the vendor in the id: bridges of several vendors on one base topic must not take over each other
        update: dict[str, Any] = {
            "client_id": f"{self.base}-{self.vendor}-bridge" + (f"-{self.shard.label}" if self.shard else "")
        }
        if self.username is not None:
            update["username"] = self.username
        if self.password is not None:
            update["password"] = SecretStr(self.password)
        return self.mqtt.model_copy(update=update)

    def new_runtime(self) -> BridgeRuntime:
        return BridgeRuntime(
            adapter=self.adapter,
            mqtt=self._mqtt(),
            data_dir=self.data_dir,
            base_topic=self.base,
            options=self.options,
            homeassistant=self.homeassistant,
            shard=self.shard,
        )

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[BridgeHarness]:
        async with anyio.create_task_group() as tg:
            connected = anyio.Event()
            tg.start_soon(self._observe, connected)
            with anyio.fail_after(20):
                await connected.wait()
            await self.start_bridge(tg)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def start_bridge(self, tg: anyio.abc.TaskGroup) -> None:
        self.runtime = self.new_runtime()
        self._bridge_scope = anyio.CancelScope()
        self._bridge_done = anyio.Event()
        runtime, done = self.runtime, self._bridge_done

        async def run() -> None:
            try:
                with self._bridge_scope:
                    await runtime.run()
            finally:
                done.set()

        tg.start_soon(run)
        with anyio.fail_after(20):
            await runtime.ready.wait()
            await runtime.connected.wait()

    async def stop_bridge(self) -> None:
        """Stop the bridge the way a crash would leave the store (tasks cancelled mid-flight), and wait
        until it has let go of its data folder: on a loaded machine its unwinding outlasts any fixed
        pause, and a bridge started after one would find the folder still locked."""
        self._bridge_scope.cancel()
        with anyio.fail_after(20):
            await self._bridge_done.wait()

    async def __aenter__(self) -> BridgeHarness:
        self._cm = self._running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)  # type: ignore[arg-type]

    async def _observe(self, connected: anyio.Event) -> None:
        """Record everything under the base topic; reconnect when the broker restarts."""
        mqtt = self._mqtt()
        while True:
            try:
                async with mqtt_client(mqtt, identifier=f"{self.base}-obs-{uuid.uuid4().hex[:6]}") as client:
                    await client.subscribe(f"{self.base}/#", qos=1)
                    await client.subscribe(f"{self.base}-replies/#", qos=1)  # MQTT v5 response topics
                    self._client = client
                    connected.set()
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                        self.messages.append((msg.topic.value, payload, bool(msg.retain), msg.properties))
                        self.retained[msg.topic.value] = payload
                        self._changed.set()
                        self._changed = anyio.Event()
            except aiomqtt.MqttError:
                self._client = None
                await anyio.sleep(0.1)

    # -- sending ---------------------------------------------------------------------------------
    def topic(self, device: str, leaf: str) -> str:
        return f"{self.base}/{self.vendor}/{device}/{leaf}"

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = False, properties: Any = None
    ) -> None:
        with anyio.fail_after(20):
            while self._client is None:  # noqa: ASYNC110 - the observer is reconnecting
                await anyio.sleep(0.05)
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        await self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 15.0) -> Any:
        with anyio.fail_after(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                await self._changed.wait()

    def responses(self, device: str, suffix: str = "set") -> list[dict[str, Any]]:
        topic = self.topic(device, f"response/{suffix}")
        return [json.loads(p) for t, p, _, _ in self.messages if t == topic]

    def events(self, device: str, type: str | None = None) -> list[dict[str, Any]]:
        topic = self.topic(device, "event")
        docs = [json.loads(p) for t, p, _, _ in self.messages if t == topic]
        return [d for d in docs if type is None or d["type"] == type]

    async def final(
        self, device: str, transaction: str, suffix: str = "set", *, timeout: float = 15.0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for r in self.responses(device, suffix):
                if r["transaction"] == transaction and r["status"] in FINAL:
                    return r
            return None

        result: dict[str, Any] = await self.wait_for(found, timeout=timeout)
        return result

    async def set(self, device: str, body: dict[str, Any], *, timeout: float = 15.0) -> dict[str, Any]:
        body = {"transaction": f"t-{uuid.uuid4().hex[:12]}", **body}
        await self.publish(self.topic(device, "set"), body)
        return await self.final(device, body["transaction"], timeout=timeout)

    async def request(
        self, device: str, action: str, body: dict[str, Any] | None = None, *, timeout: float = 15.0
    ) -> dict[str, Any]:
        body = {"transaction": f"t-{uuid.uuid4().hex[:12]}", **(body or {})}
        await self.publish(self.topic(device, f"request/{action}"), body)
        return await self.final(device, body["transaction"], action, timeout=timeout)

    async def get(self, device: str, *, timeout: float = 15.0) -> dict[str, Any]:
        txn = f"t-{uuid.uuid4().hex[:12]}"
        await self.publish(self.topic(device, "get"), {"transaction": txn})
        return await self.final(device, txn, "get", timeout=timeout)

    def retained_json(self, device: str, leaf: str) -> Any:
        raw = self.retained.get(self.topic(device, leaf))
        return None if raw is None else json_or_text(raw)

    async def wait_retained(
        self, device: str, leaf: str, predicate: Callable[[Any], bool] = bool, *, timeout: float = 15.0
    ) -> Any:
        def check() -> Any:
            doc = self.retained_json(device, leaf)
            return doc if doc is not None and predicate(doc) else None

        return await self.wait_for(check, timeout=timeout)


def json_or_text(payload: bytes) -> Any:
    """A payload as JSON, or as text when it is not JSON (``online``, ``LOCK``)."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def v5_reply(topic: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = topic
    props.CorrelationData = correlation
    return props
