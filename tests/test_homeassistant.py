"""Home Assistant MQTT discovery over a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def config_topic(h: BridgeHarness, component: str, device: str) -> str:
    return f"{h.base}/homeassistant/{component}/locktwin_fake_{device}/{component}/config"


async def test_lock_entity_uses_the_contract(mqtt_broker: str, tmp_path: Path) -> None:
    async with BridgeHarness(adapter=FakeAdapter(), broker_url=mqtt_broker, data_dir=tmp_path) as h:
        raw = await h.wait_for(lambda: h.retained.get(config_topic(h, "lock", "d1")))
        config = json.loads(raw)
        assert config["command_topic"] == h.topic("d1", "set")
        assert config["state_topic"] == h.topic("d1", "state")
        assert (config["payload_lock"], config["payload_unlock"]) == ("LOCK", "UNLOCK")
        assert config["state_jammed"] == "JAMMED" and config["optimistic"] is False
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [
            f"{h.base}/bridge/fake/state",
            h.topic("d1", "availability"),
        ]
        assert config["device"]["identifiers"] == ["locktwin_fake_d1"]
        connectivity = json.loads(await h.wait_for(lambda: h.retained.get(config_topic(h, "binary_sensor", "d1"))))
        assert connectivity["device_class"] == "connectivity"
        assert connectivity["state_topic"] == h.topic("d1", "availability")
        # HA's own payload on the command topic drives the lock
        await h.publish(config["command_topic"], config["payload_unlock"])
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "UNLOCKED")


async def test_battery_and_tracker_appear_with_their_first_reading(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d2"].position = (52.52, 13.40)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.wait_for(lambda: h.retained.get(config_topic(h, "lock", "d2")))
        assert config_topic(h, "sensor", "d2") not in h.retained
        await h.get("d2")
        battery = json.loads(await h.wait_for(lambda: h.retained.get(config_topic(h, "sensor", "d2"))))
        assert battery["device_class"] == "battery" and battery["unit_of_measurement"] == "%"
        tracker = json.loads(await h.wait_for(lambda: h.retained.get(config_topic(h, "device_tracker", "d2"))))
        assert tracker["source_type"] == "gps"
        assert tracker["json_attributes_topic"] == h.topic("d2", "state")
        state = h.retained_json("d2", "state")
        assert (state["latitude"], state["longitude"]) == (52.52, 13.40)


async def test_reannounced_when_home_assistant_comes_online(mqtt_broker: str, tmp_path: Path) -> None:
    async with BridgeHarness(adapter=FakeAdapter(), broker_url=mqtt_broker, data_dir=tmp_path) as h:
        topic = config_topic(h, "lock", "d1")
        await h.wait_for(lambda: h.retained.get(topic))
        before = sum(1 for t, *_ in h.messages if t == topic)
        await h.publish(f"{h.base}/homeassistant/status", "online")
        await h.wait_for(lambda: sum(1 for t, *_ in h.messages if t == topic) > before)


async def test_gone_device_is_removed(mqtt_broker: str, tmp_path: Path) -> None:
    h = BridgeHarness(adapter=FakeAdapter(), broker_url=mqtt_broker, data_dir=tmp_path)
    async with h:
        await h.wait_for(lambda: h.retained.get(config_topic(h, "lock", "d2")))
        await h.stop_bridge()
        h.adapter = FakeAdapter(settings=FakeSettings(devices=["d1"]))
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            await h.wait_for(lambda: h.retained.get(config_topic(h, "lock", "d2")) == b"")

            def listed() -> list[str]:
                doc = json.loads(h.retained.get(f"{h.base}/bridge/fake/devices") or b"{}")
                return [d["id"] for d in doc.get("devices", [])]

            await h.wait_for(lambda: listed() == ["d1"])
            await h.stop_bridge()


async def test_every_via_device_is_an_announced_device(mqtt_broker: str, tmp_path: Path) -> None:
    """Home Assistant makes an empty placeholder for a ``via_device`` nobody announced."""
    async with BridgeHarness(adapter=FakeAdapter(), broker_url=mqtt_broker, data_dir=tmp_path) as h:
        bridge_topic = f"{h.base}/homeassistant/binary_sensor/locktwin_bridge_fake/connectivity/config"
        bridge = json.loads(await h.wait_for(lambda: h.retained.get(bridge_topic)))
        assert bridge["state_topic"] == f"{h.base}/bridge/fake/state"
        assert (bridge["payload_on"], bridge["payload_off"]) == ("online", "offline")
        await h.wait_for(lambda: h.retained.get(config_topic(h, "lock", "d1")))
        configs = [json.loads(p) for t, p in h.retained.items() if t.endswith("/config") and p]
        announced = {i for c in configs for i in c["device"]["identifiers"]}
        via = {c["device"]["via_device"] for c in configs if "via_device" in c["device"]}
        assert via == {"locktwin_bridge_fake"}
        assert via <= announced
