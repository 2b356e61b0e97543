"""The broker matrix's NATS row: a private ``nats-server`` with JetStream and its MQTT listener.

NATS 2.9.10 (Debian's) speaks MQTT 3.1.1 only, so the bridge runs with ``mqtt.protocol = "3.1.1"``
and ``mqtt.dots_in_topics = false``. What must hold there: the lifecycle (a lock confirmed), the
expiry, retained state for a new subscriber, a restart of the bridge (commands sent meanwhile are
delivered, a retained command is refused), TLS on the MQTT listener; a device id with a ``.`` is
refused at start in one line, before anything is published (NATS drops the connection on such a
publish, so a bridge would otherwise reconnect for ever).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import anyio
import pytest

from tests.fake_adapter import FakeAdapter, FakeSettings
from tests.transport.conftest import Pki
from twin.broker import NatsBroker
from twin.config import MqttSettings
from twin.mqtt import UnsupportedTopicError, describe_error, mqtt_client
from twin.runtime import BridgeRuntime
from twin.testing import BridgeHarness

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not NatsBroker.available(), reason="nats-server not installed (apt-get install nats-server)"),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsBroker]:
    broker = NatsBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


def on_nats(broker: NatsBroker) -> MqttSettings:
    return MqttSettings(url=broker.url, protocol="3.1.1", dots_in_topics=False)


def harness(broker: NatsBroker, tmp_path: Path, adapter: FakeAdapter | None = None) -> BridgeHarness:
    return BridgeHarness(adapter=adapter or FakeAdapter(), mqtt=on_nats(broker), data_dir=tmp_path)


async def test_v5_is_refused_with_a_line_that_says_what_to_set(nats: NatsBroker) -> None:
    settings = MqttSettings(url=nats.url)
    with pytest.raises(aiomqtt.MqttError) as refused:
        async with mqtt_client(settings, identifier="v5-probe"):
            pass
    assert 'set mqtt.protocol = "3.1.1"' in describe_error(refused.value, settings)


async def test_lock_is_confirmed(nats: NatsBroker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].locked = False
    async with harness(nats, tmp_path, adapter) as h:
        final = await h.set("d1", {"lock": "LOCKED"})
        assert final["status"] == "succeeded"
        assert [r["status"] for r in h.responses("d1") if r["transaction"] == final["transaction"]] == [
            "accepted",
            "succeeded",
        ]
        assert [e["data"]["to"] for e in h.events("d1", "command")] == ["accepted", "sent", "acknowledged", "succeeded"]
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")


async def test_a_command_for_an_offline_device_expires(nats: NatsBroker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].online = False
    async with harness(nats, tmp_path, adapter) as h:
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 1.5})
        assert final["status"] == "expired" and final["error"]["code"] == "EXPIRED"
        stale = await h.set("d2", {"lock": "UNLOCKED", "issued_at": "2020-01-01T00:00:00Z", "expires_in": 5})
        assert stale["status"] == "rejected" and stale["error"]["code"] == "EXPIRED"
        assert ("d2", "unlock") not in adapter.calls


async def test_a_new_subscriber_gets_the_retained_state(nats: NatsBroker, tmp_path: Path) -> None:
    async with harness(nats, tmp_path) as h:
        assert (await h.set("d1", {"lock": "UNLOCKED"}))["status"] == "succeeded"
        await h.wait_retained("d1", "twin", lambda t: t["command"]["status"] == "succeeded")
        seen: dict[str, bytes] = {}
        wanted = {h.topic("d1", leaf) for leaf in ("state", "twin", "availability")} | {f"{h.base}/bridge/fake/state"}
        async with mqtt_client(on_nats(nats), identifier=f"dash-{uuid.uuid4().hex[:6]}") as dashboard:
            await dashboard.subscribe(f"{h.base}/#", qos=1)
            with anyio.fail_after(15):
                async for message in dashboard.messages:
                    if message.retain:
                        seen[message.topic.value] = bytes(message.payload)  # type: ignore[arg-type]
                    if wanted <= set(seen):
                        break
        assert json.loads(seen[h.topic("d1", "state")])["lock"] == "UNLOCKED"
        assert seen[f"{h.base}/bridge/fake/state"] == b"online"


async def test_a_restarted_bridge_serves_what_came_while_it_was_down(nats: NatsBroker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with harness(nats, tmp_path, adapter) as h:
        await h.stop_bridge()
        await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/fake/state") == b"offline")
        # queued for the bridge's persistent session (clean session off) in JetStream
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "while-down", "expires_in": 60})
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            assert (await h.final("d1", "while-down"))["status"] == "succeeded"
            assert (await h.set("d1", {"lock": "LOCKED"}))["status"] == "succeeded"
            await h.stop_bridge()
        assert adapter.calls == [("d1", "unlock"), ("d1", "lock")]


async def test_retained_commands_are_refused_only_from_the_store(nats: NatsBroker, tmp_path: Path) -> None:
    """MQTT 3.1.1 clears the retain flag of a message delivered to an existing subscription, and has
    no *retain as published*: the bridge recognises a retained command only when the broker's store
    delivers it on subscribe. One published before the bridge ever subscribed is refused; one
    published while it is away with its session is queued as a live message and served (README's
    broker matrix: keep retain off command topics with the broker's permissions)."""
    adapter = FakeAdapter()
    base = f"lt-test-{uuid.uuid4().hex[:10]}"
    async with mqtt_client(on_nats(nats), identifier=f"{base}-early") as early:
        body = json.dumps({"lock": "UNLOCKED", "transaction": "retained-early"})
        await early.publish(f"{base}/fake/d1/set", body, qos=1, retain=True)
    h = BridgeHarness(adapter=adapter, mqtt=on_nats(nats), data_dir=tmp_path, base_topic=base)
    async with h:
        refused = await h.final("d1", "retained-early")
        assert refused["status"] == "rejected" and refused["error"]["code"] == "RETAINED_COMMAND"
        await h.stop_bridge()
        await h.publish(h.topic("d2", "set"), {"lock": "UNLOCKED", "transaction": "retained-away"}, retain=True)
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            # the store's copy names a stored command's transaction: refused as the payload it is
            # (no transaction), not as that command's answer
            answers = await h.wait_for(
                lambda: (
                    "succeeded" in {r["status"] for r in h.responses("d2") if r["transaction"] == "retained-away"}
                    and any(
                        r["status"] == "rejected" and r["error"]["code"] == "RETAINED_COMMAND"
                        for r in h.responses("d2")
                        if r["transaction"] is None
                    )
                )
            )
            assert answers
            await h.stop_bridge()
        # from the session queue: served, once; from the store on subscribe: refused
        assert adapter.calls == [("d2", "unlock")]
        for device in ("d1", "d2"):
            await h.publish(h.topic(device, "set"), b"", retain=True)  # clear them, as an operator would


async def test_a_device_id_with_a_dot_is_refused_at_start(nats: NatsBroker, tmp_path: Path) -> None:
    adapter = FakeAdapter(settings=FakeSettings(devices=["d1", "bike.7"]))
    runtime = BridgeRuntime(adapter=adapter, mqtt=on_nats(nats), data_dir=tmp_path, base_topic="lt-dots")
    with pytest.raises(UnsupportedTopicError, match=r"device ids bike\.7") as refused:
        await runtime.run()
    assert "mqtt.dots_in_topics is false" in str(refused.value) and "\n" not in str(refused.value)
    assert not runtime.ready.is_set()  # refused before the engine started, and before any connection


async def test_the_bridge_process_says_so_in_one_line(nats: NatsBroker, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "LOCKTWIN_MQTT__URL": nats.url,
            "LOCKTWIN_MQTT__PROTOCOL": "3.1.1",
            "LOCKTWIN_MQTT__DOTS_IN_TOPICS": "false",
            "LOCKTWIN_DATA_DIR": str(tmp_path),
            "LOCKTWIN_VENDORS": json.dumps({"fake": {"devices": ["d1", "bike.7"]}}),
        }
    )
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "twin.cli", "run", "tests.fake_adapter:FakeAdapter"], env=env, check=False
        )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and "device ids bike.7" in err and "Traceback" not in err, err


async def test_tls_on_the_mqtt_listener(pki: Pki, tmp_path: Path) -> None:
    tls = f'  tls {{\n    cert_file: "{pki.server.cert}"\n    key_file: "{pki.server.key}"\n  }}'
    broker = NatsBroker(mqtt_extra=tls)
    broker.start()
    try:
        mqtt = MqttSettings(
            url=f"mqtts://localhost:{broker.port}", ca_file=pki.ca.cert_file, protocol="3.1.1", dots_in_topics=False
        )
        async with BridgeHarness(adapter=FakeAdapter(), mqtt=mqtt, data_dir=tmp_path) as h:
            assert (await h.set("d1", {"lock": "UNLOCKED"}))["status"] == "succeeded"
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)
