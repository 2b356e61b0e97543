"""Home Assistant MQTT discovery over a real broker."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from paho.mqtt.client import topic_matches_sub

from contracts.topics import Topics
from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.adapter import DeviceInfo
from twin.config import LocktwinSettings, MqttSettings
from twin.homeassistant import HomeAssistantDiscovery, HomeAssistantSettings
from twin.homeassistant_legacy import clear_legacy_discovery
from twin.store import TwinRecord
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def config_topic(h: BridgeHarness, component: str, device: str) -> str:
    return f"{h.base}/homeassistant/{component}/locktwin_fake/{device}/config"


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


# -- topic layout -----------------------------------------------------------------------------------

#: Home Assistant's discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config
HA_TOPIC = re.compile(r"^homeassistant/(?P<component>\w+)/(?P<node>[a-zA-Z0-9_-]+)/(?P<object>[a-zA-Z0-9_-]+)/config$")


def announced(vendor: str, shard: str | None, devices: list[str]) -> dict[str, dict[str, Any]]:
    discovery = HomeAssistantDiscovery(settings=HomeAssistantSettings(), topics=Topics("locktwin", vendor, shard))
    infos = [DeviceInfo(id=d, capabilities=frozenset({"lock", "battery"})) for d in devices]
    twins = {d: TwinRecord(device=d, reported={"latitude": 1.0, "longitude": 2.0}) for d in devices}
    out: dict[str, dict[str, Any]] = {}
    discovery.announce_all(infos, twins, lambda topic, payload: out.__setitem__(topic, json.loads(payload)))
    return out


@pytest.mark.parametrize("shard", [None, "0-of-2"])
def test_config_topics_name_the_vendor_in_a_level_of_its_own(shard: str | None) -> None:
    """So that an ACL (wildcards match whole levels) can give each vendor's bridge its own configs."""
    configs = announced("segway", shard, ["861477030000000", "a.b:c"])
    assert len(configs) == 1 + 2 * 4  # the bridge, and lock, battery, tracker, connectivity per device
    for topic in configs:
        match = HA_TOPIC.match(topic)
        assert match is not None, topic
        assert match["node"] in ("locktwin_segway", "locktwin_bridge_segway"), topic
        mine = ("homeassistant/+/locktwin_segway/#", "homeassistant/+/locktwin_bridge_segway/#")
        assert any(topic_matches_sub(grant, topic) for grant in mine)
        others = ("homeassistant/+/locktwin_okai/#", "homeassistant/+/locktwin_bridge_okai/#")
        assert not any(topic_matches_sub(grant, topic) for grant in others)
    assert "homeassistant/lock/locktwin_segway/a_b_c/config" in configs


def test_unique_ids_and_identifiers_are_those_of_earlier_versions() -> None:
    """Home Assistant keys its entity registry by unique id: the same ids keep users' entities."""
    by_id = {c["unique_id"]: c for c in announced("fake", None, ["d1"]).values()}
    assert set(by_id) == {
        "locktwin_bridge_fake_connectivity",
        "locktwin_fake_d1_lock",
        "locktwin_fake_d1_battery",
        "locktwin_fake_d1_location",
        "locktwin_fake_d1_connectivity",
    }
    assert by_id["locktwin_fake_d1_lock"]["device"]["identifiers"] == ["locktwin_fake_d1"]
    sharded = {c["unique_id"] for c in announced("fake", "0-of-2", ["d1"]).values()}
    assert "locktwin_bridge_fake_0_of_2_connectivity" in sharded


def test_legacy_topics_are_where_earlier_versions_announced() -> None:
    topics = Topics("locktwin", "fake", None)
    discovery = HomeAssistantDiscovery(settings=HomeAssistantSettings(), topics=topics)
    assert discovery.legacy_topics("d.1") == [
        "homeassistant/lock/locktwin_fake_d_1/lock/config",
        "homeassistant/sensor/locktwin_fake_d_1/sensor/config",
        "homeassistant/device_tracker/locktwin_fake_d_1/device_tracker/config",
        "homeassistant/binary_sensor/locktwin_fake_d_1/binary_sensor/config",
    ]
    assert discovery.legacy_bridge_topic() is None  # unchanged: homeassistant/binary_sensor/locktwin_bridge_fake/...
    sharded = HomeAssistantDiscovery(settings=HomeAssistantSettings(), topics=Topics("locktwin", "fake", "1-of-2"))
    assert (
        sharded.legacy_bridge_topic() == "homeassistant/binary_sensor/locktwin_bridge_fake_1_of_2/connectivity/config"
    )
    assert sharded.bridge_config()[0] == "homeassistant/binary_sensor/locktwin_bridge_fake/connectivity_1-of-2/config"


def legacy_config(h: BridgeHarness, component: str, device: str) -> str:
    return f"{h.base}/homeassistant/{component}/locktwin_fake_{device}/{component}/config"


async def test_clear_legacy_empties_the_old_configs_of_listed_devices_only(mqtt_broker: str, tmp_path: Path) -> None:
    h = BridgeHarness(
        adapter=FakeAdapter(settings=FakeSettings(devices=["d1", "d2"])), broker_url=mqtt_broker, data_dir=tmp_path
    )
    old = [legacy_config(h, "lock", "d1"), legacy_config(h, "binary_sensor", "d1"), legacy_config(h, "lock", "d2")]
    kept = {
        legacy_config(h, "lock", "gone"): b'{"name":"not listed by the bridge"}',
        f"{h.base}/homeassistant/sensor/0x00158d0001/battery/config": b'{"name":"another integration"}',
    }
    settings = LocktwinSettings(
        base_topic=h.base,
        mqtt=MqttSettings(url=mqtt_broker),
        homeassistant=HomeAssistantSettings(prefix=f"{h.base}/homeassistant"),
    )
    async with h:
        for topic in old:  # as an earlier version left them
            await h.publish(topic, '{"name":"old layout"}', retain=True)
        for topic, payload in kept.items():
            await h.publish(topic, payload, retain=True)
        new = config_topic(h, "lock", "d1")
        await h.wait_for(lambda: all(h.retained.get(t) for t in [*old, *kept, new]))

        dry = await clear_legacy_discovery(settings=settings, dry_run=True)
        assert dry.found == sorted(old) and dry.remaining == []
        assert dry.devices == {"fake": 2}

        announcements = sum(1 for t, *_ in h.messages if t == new)
        env = {
            **os.environ,
            "LOCKTWIN_MQTT__URL": mqtt_broker,
            "LOCKTWIN_BASE_TOPIC": h.base,
            "LOCKTWIN_HOMEASSISTANT__PREFIX": f"{h.base}/homeassistant",
        }
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [sys.executable, "-m", "twin.cli", "homeassistant", "clear-legacy"], env=env, check=False
            )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == sorted(old)
        await h.wait_for(lambda: all(h.retained.get(t) == b"" for t in old))
        assert all(h.retained[t] == payload for t, payload in kept.items())
        # ``online`` on the status topic: the bridge announced again, at the new topics
        await h.wait_for(lambda: sum(1 for t, *_ in h.messages if t == new) > announcements)
        assert json.loads(h.retained[new])["unique_id"] == "locktwin_fake_d1_lock"

        again = await clear_legacy_discovery(settings=settings)
        assert again.found == []


def test_a_bridge_with_a_budget_has_a_sensor_of_what_is_left() -> None:
    topics = Topics("locktwin", "tuya")
    published: dict[str, dict[str, Any]] = {}

    def publish(topic: str, payload: bytes) -> None:
        published[topic] = json.loads(payload)

    HomeAssistantDiscovery(settings=HomeAssistantSettings(), topics=topics).announce_all([], {}, publish)
    assert not [t for t in published if t.startswith("homeassistant/sensor/")]  # no budget, no sensor
    budgeted = HomeAssistantDiscovery(settings=HomeAssistantSettings(), topics=topics, budget=True)
    budgeted.announce_all([], {}, publish)
    sensor = published["homeassistant/sensor/locktwin_bridge_tuya/budget/config"]
    assert sensor["state_topic"] == "locktwin/bridge/tuya/budget" == topics.bridge_budget
    assert sensor["value_template"] == "{{ value_json.remaining }}"
    bridge = published["homeassistant/binary_sensor/locktwin_bridge_tuya/connectivity/config"]
    assert sensor["device"] == bridge["device"]  # on the bridge's own device
    assert sensor["unique_id"] != bridge["unique_id"]
