"""The runtime: broker loss and restart, persistent sessions, ordering and bounds, configuration."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from tests.fake_adapter import FakeAdapter
from twin.adapter import CommandContext, ExecuteResult
from twin.config import BridgeOptions, load_settings
from twin.testing import BridgeHarness, MosquittoBroker

pytestmark = pytest.mark.anyio

needs_mosquitto = pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")


@needs_mosquitto
async def test_broker_restart_reconnects_and_republishes(tmp_path: Path) -> None:
    broker = MosquittoBroker(workdir=tmp_path / "broker")
    broker.workdir.mkdir()
    broker.start()
    try:
        adapter = FakeAdapter()
        async with BridgeHarness(adapter=adapter, broker_url=broker.url, data_dir=tmp_path / "data") as h:
            assert (await h.set("d1", {"lock": "UNLOCKED"}))["status"] == "succeeded"
            h.retained.clear()
            broker.restart()
            # the bridge comes back by itself and republishes its retained topics
            await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/fake/state") == b"online", timeout=30)
            await h.wait_retained("d1", "state", lambda s: s["lock"] == "UNLOCKED", timeout=30)
            assert (await h.set("d1", {"lock": "LOCKED"}, timeout=30))["status"] == "succeeded"
    finally:
        broker.stop()


async def test_commands_sent_while_bridge_is_down_are_delivered(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.stop_bridge()
        await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/fake/state") == b"offline")
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "while-down", "expires_in": 60})
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            final = await h.final("d1", "while-down")
            assert final["status"] == "succeeded"
            await h.stop_bridge()
        assert adapter.calls == [("d1", "unlock")]


class SlowAdapter(FakeAdapter):
    """Records how many vendor calls overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.locks = {f"d{i}": self.locks.get(f"d{i}") or type(self.locks["d1"])() for i in range(1, 9)}
        self.active = 0
        self.peak = 0
        self.order: list[tuple[str, str]] = []

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.order.append((device_id, ctx.transaction or ""))
        try:
            await anyio.sleep(0.1)
            return await super().lock(device_id, locked=locked, ctx=ctx)
        finally:
            self.active -= 1


async def test_per_device_order_and_bounded_concurrency(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = SlowAdapter()
    options = BridgeOptions(max_in_flight=3)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        for i in range(1, 9):
            await h.publish(h.topic(f"d{i}", "request/find"), {"transaction": f"find-{i}"})
        # one device: an action then a lock, answered in acceptance order
        for i in range(1, 9):
            await h.publish(h.topic(f"d{i}", "set"), {"lock": "UNLOCKED", "transaction": f"u-{i}"})
        for i in range(1, 9):
            assert (await h.final(f"d{i}", f"u-{i}"))["status"] == "succeeded"
            find = await h.final(f"d{i}", f"find-{i}", "find")
            assert find["status"] == "succeeded"
        assert adapter.peak <= 3
        assert adapter.peak >= 2  # devices do run concurrently
        for i in range(1, 9):
            device = f"d{i}"
            mine = [c for c in adapter.calls if c[0] == device]
            assert mine == [(device, "find"), (device, "unlock")]


def test_settings_refuse_secrets_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "locktwin.toml"
    config.write_text('[mqtt]\nurl = "mqtt://b:1883"\npassword = "hunter2"\n')
    with pytest.raises(ValueError, match=r"mqtt\.password: secrets are not read from the configuration file"):
        load_settings(config)
    config.write_text('[vendors.okai]\nsign_key = "abc"\n')
    with pytest.raises(ValueError, match=r"vendors\.okai\.sign_key"):
        load_settings(config)


def test_settings_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = tmp_path / "locktwin.toml"
    config.write_text(
        f'base_topic = "fleet"\n[mqtt]\nurl = "mqtt://file:1883"\npassword_file = "{secret}"\n'
        '[bridges.fake]\nhold = ["d1"]\n'
    )
    monkeypatch.setenv("LOCKTWIN_MQTT__URL", "mqtt://env:1884")
    settings = load_settings(config)
    assert settings.base_topic == "fleet"
    assert (settings.mqtt.host, settings.mqtt.port) == ("env", 1884)
    assert settings.mqtt.secret() == "s3cret"
    assert settings.bridge("fake").hold == ["d1"]
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("LOCKTWIN_MQTT__PASSWORD", "from-env")
    assert load_settings(config).mqtt.secret() == "from-env"
    assert "from-env" not in str(load_settings(config))


def test_expiry_is_bounded_by_the_vendor(tmp_path: Path) -> None:
    from twin.intake import expiry

    now = time.time()
    assert expiry(expires_in=10_000, issued_at=None, default=30, maximum=300, now=now) == now + 300
    assert expiry(expires_in=None, issued_at=None, default=30, maximum=300, now=now) == now + 30


def test_mqtt_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="must not carry credentials"):
        load_settings(None, mqtt={"url": "mqtt://bridge:hunter2@broker:1883"})


async def test_undelivered_final_answers_go_out_first_after_a_restart(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        last = adapter.settings.devices[-1]
        final = await h.set(last, {"lock": "UNLOCKED"})
        await h.stop_bridge()
        # as if the process died before the broker acknowledged that final answer
        with sqlite3.connect(tmp_path / "fake" / "twins.sqlite") as db:
            db.execute("UPDATE commands SET answered=0 WHERE txn=?", (final["transaction"],))
        db.close()
        start = len(h.messages)
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            answer_topic = h.topic(last, "response/set")

            def answer_index() -> int | None:
                for i, (topic, payload, _, _) in enumerate(h.messages[start:]):
                    if topic == answer_topic and json.loads(payload)["transaction"] == final["transaction"]:
                        return i
                return None

            index = await h.wait_for(answer_index)
            before = [topic for topic, _, _, _ in h.messages[start : start + index]]
            # the answer's own device first (its documents match the answer), ahead of the fleet
            assert h.topic(last, "state") in before and h.topic(last, "twin") in before
            others = [d for d in adapter.settings.devices if d != last]
            assert not [t for t in before if any(t.startswith(h.topic(d, "")) for d in others)]
            assert json.loads(h.messages[start + index][1])["status"] == "succeeded"
            # and the rest of the fleet follows
            await h.wait_for(lambda: all(h.topic(d, "state") in [m[0] for m in h.messages[start:]] for d in others))
            await h.stop_bridge()
