"""Home Assistant MQTT discovery, as an extension of the runtime.

Per locktwin device, one Home Assistant device with: a ``lock`` entity (the contract's ``/set`` and
``state`` topics with HA's default payloads), a battery ``sensor`` when the device reports a battery,
a ``device_tracker`` when it reports a position, and a connectivity ``binary_sensor``. Availability
is the list of the bridge's and the device's topics with mode ``all``. The bridge itself is announced
as a device too (its connectivity), since every device names it in ``via_device``. Configurations are retained,
announced again when ``homeassistant/status`` turns ``online``, re-announced when a device gains an
entity (its first battery reading), and removed with an empty retained payload when a device is gone.

Topics name the vendor in a level of its own (HA's optional node id), so that a broker's ACL, whose
wildcards match whole levels, can let each vendor's bridge write only its own configs::

    <prefix>/<component>/locktwin_<vendor>/<device>/config                  a device's entities
    <prefix>/binary_sensor/locktwin_bridge_<vendor>/connectivity[_<shard>]/config   the bridge
    <prefix>/sensor/locktwin_bridge_<vendor>/budget[_<shard>]/config                its budget

Earlier versions put the device in the node id (``<prefix>/<component>/locktwin_<vendor>_<device>/
<component>/config``, and ``locktwin_bridge_<vendor>_<shard>`` for a shard); :meth:`legacy_topics`
names those, for ``locktwin homeassistant clear-legacy`` to empty. Unique ids and device identifiers
are the same in both layouts, so Home Assistant keeps its entities.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.topics import Topics
from twin.adapter import DeviceInfo
from twin.extensions import BridgeContext, Connected, Extension, Message, TwinChanged
from twin.store import TwinRecord

__all__ = ["DEFAULT_PREFIX", "HomeAssistantDiscovery", "HomeAssistantExtension", "HomeAssistantSettings"]

Publish = Callable[[str, bytes], None]

#: Home Assistant's own default discovery prefix
DEFAULT_PREFIX = "homeassistant"
#: every component a device may have, in the order they are announced
COMPONENTS = ("lock", "sensor", "device_tracker", "binary_sensor")


class HomeAssistantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class HomeAssistantDiscovery:
    """Announces devices; ``publish(topic, payload)`` sends a retained message."""

    def __init__(self, *, settings: HomeAssistantSettings, topics: Topics, budget: bool = False) -> None:
        self.settings = settings
        self.topics = topics
        #: whether the bridge has a budget (then its remaining requests are a sensor of the bridge)
        self.budget = budget
        self._announced: dict[str, frozenset[str]] = {}

    @property
    def status_topic(self) -> str:
        return f"{self.settings.prefix}/status"

    @staticmethod
    def _safe(device: str) -> str:
        return "".join(c if c.isalnum() or c in "_-" else "_" for c in device)

    def _node(self, device: str) -> str:
        """The device's identifier in Home Assistant (and the stem of its entities' unique ids)."""
        return f"locktwin_{self.topics.vendor}_{self._safe(device)}"

    @property
    def bridge_node(self) -> str:
        """The bridge's own Home Assistant device, which every device names in ``via_device``."""
        shard = "" if self.topics.shard is None else "_" + self.topics.shard.replace("-", "_")
        return f"locktwin_bridge_{self.topics.vendor}{shard}"

    def bridge_config(self) -> tuple[str, dict[str, Any]]:
        """The bridge as a device with one entity, its connectivity (its ``bridge/.../state`` topic)."""
        node = self.bridge_node
        shard = "" if self.topics.shard is None else f" (shard {self.topics.shard})"
        entity = "connectivity" if self.topics.shard is None else f"connectivity_{self.topics.shard}"
        topic = f"{self.settings.prefix}/binary_sensor/locktwin_bridge_{self.topics.vendor}/{entity}/config"
        return topic, {
            "name": "Connectivity",
            "unique_id": f"{node}_connectivity",
            "state_topic": self.topics.bridge_state,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": {
                "identifiers": [node],
                "name": f"locktwin {self.topics.vendor} bridge{shard}",
                "manufacturer": "locktwin",
                "model": "bridge",
            },
        }

    def bridge_budget_config(self) -> tuple[str, dict[str, Any]]:
        """The requests left of the bridge's budget, a sensor of the bridge's device."""
        _, connectivity = self.bridge_config()
        entity = "budget" if self.topics.shard is None else f"budget_{self.topics.shard}"
        topic = f"{self.settings.prefix}/sensor/locktwin_bridge_{self.topics.vendor}/{entity}/config"
        return topic, {
            "name": "Vendor requests left",
            "unique_id": f"{self.bridge_node}_budget_remaining",
            "state_topic": self.topics.bridge_budget,
            "value_template": "{{ value_json.remaining }}",
            "json_attributes_topic": self.topics.bridge_budget,
            "unit_of_measurement": "requests",
            "state_class": "measurement",
            "icon": "mdi:counter",
            "entity_category": "diagnostic",
            "availability": [{"topic": self.topics.bridge_state}],
            "device": connectivity["device"],
        }

    def _config_topic(self, component: str, device: str) -> str:
        return f"{self.settings.prefix}/{component}/locktwin_{self.topics.vendor}/{self._safe(device)}/config"

    def legacy_topics(self, device: str) -> list[str]:
        """Where earlier versions announced this device's entities."""
        return [f"{self.settings.prefix}/{c}/{self._node(device)}/{c}/config" for c in COMPONENTS]

    def legacy_bridge_topic(self) -> str | None:
        """Where earlier versions announced this shard's bridge (None: unsharded, the topic is unchanged)."""
        if self.topics.shard is None:
            return None
        return f"{self.settings.prefix}/binary_sensor/{self.bridge_node}/connectivity/config"

    @staticmethod
    def kinds(info: DeviceInfo, twin: TwinRecord) -> frozenset[str]:
        kinds = {"binary_sensor"}
        if "lock" in info.capabilities:
            kinds.add("lock")
        if twin.reported.get("battery") is not None or "battery" in info.capabilities:
            kinds.add("sensor")
        if twin.reported.get("latitude") is not None:
            kinds.add("device_tracker")
        return frozenset(kinds)

    def configs(self, info: DeviceInfo, twin: TwinRecord) -> dict[str, dict[str, Any]]:
        node = self._node(info.id)
        device = {
            "identifiers": [node],
            "name": info.name or f"{self.topics.vendor} {info.id}",
            "manufacturer": self.topics.vendor,
            "model": info.model or self.topics.vendor,
            "via_device": self.bridge_node,
        }
        availability = {
            "availability": [
                {"topic": self.topics.bridge_state},
                {"topic": self.topics.availability(info.id)},
            ],
            "availability_mode": "all",
        }
        state = self.topics.state(info.id)
        kinds = self.kinds(info, twin)
        out: dict[str, dict[str, Any]] = {}
        if "lock" in kinds:
            out["lock"] = {
                "name": None,
                "unique_id": f"{node}_lock",
                "command_topic": self.topics.device(info.id, "set"),
                "state_topic": state,
                "value_template": "{{ value_json.lock }}",
                "payload_lock": "LOCK",
                "payload_unlock": "UNLOCK",
                "state_locked": "LOCKED",
                "state_unlocked": "UNLOCKED",
                "state_locking": "LOCKING",
                "state_unlocking": "UNLOCKING",
                "state_jammed": "JAMMED",
                "json_attributes_topic": state,
                "optimistic": False,
                "qos": 1,
                **availability,
                "device": device,
            }
        if "sensor" in kinds:
            out["sensor"] = {
                "name": "Battery",
                "unique_id": f"{node}_battery",
                "state_topic": state,
                "value_template": "{{ value_json.battery }}",
                "device_class": "battery",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                **availability,
                "device": device,
            }
        if "device_tracker" in kinds:
            out["device_tracker"] = {
                "name": "Location",
                "unique_id": f"{node}_location",
                "json_attributes_topic": state,
                "json_attributes_template": (
                    "{{ {'latitude': value_json.latitude, 'longitude': value_json.longitude, "
                    "'gps_accuracy': value_json.gps_accuracy | default(0)} | tojson }}"
                ),
                "source_type": "gps",
                **availability,
                "device": device,
            }
        out["binary_sensor"] = {
            "name": "Connectivity",
            "unique_id": f"{node}_connectivity",
            "state_topic": self.topics.availability(info.id),
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "availability": [{"topic": self.topics.bridge_state}],
            "device": device,
        }
        return out

    def announce(self, info: DeviceInfo, twin: TwinRecord, publish: Publish) -> None:
        for component, config in self.configs(info, twin).items():
            publish(self._config_topic(component, info.id), json.dumps(config, separators=(",", ":")).encode())
        self._announced[info.id] = self.kinds(info, twin)

    def announce_all(
        self,
        devices: Sequence[DeviceInfo],
        twins: Mapping[str, TwinRecord],
        publish: Publish,
        *,
        gone: Iterable[str] = (),
    ) -> None:
        """The bridge and every device of ``devices`` with a twin in ``twins``; the configurations of
        ``gone`` devices removed."""
        topic, config = self.bridge_config()
        publish(topic, json.dumps(config, separators=(",", ":")).encode())
        if self.budget:
            topic, config = self.bridge_budget_config()
            publish(topic, json.dumps(config, separators=(",", ":")).encode())
        for info in devices:
            twin = twins.get(info.id)
            if twin is not None:  # an instance sharing a store announces the devices it serves
                self.announce(info, twin, publish)
        for device in gone:
            self.remove(device, publish)

    def changed(self, info: DeviceInfo, twin: TwinRecord, publish: Publish) -> None:
        """Re-announce a device whose set of entities changed (e.g. its first battery reading)."""
        if self._announced.get(info.id) != self.kinds(info, twin):
            self.announce(info, twin, publish)

    def remove(self, device: str, publish: Publish) -> None:
        for component in COMPONENTS:
            publish(self._config_topic(component, device), b"")
        self._announced.pop(device, None)


class HomeAssistantExtension(Extension):
    """Discovery as an extension of the bridge: announces every device when the bridge connects and
    when Home Assistant comes back (``{prefix}/status`` turns ``online``: it forgets non-retained
    state), and re-announces a device whose entities changed."""

    def __init__(self, *, settings: HomeAssistantSettings, topics: Topics) -> None:
        self.discovery = HomeAssistantDiscovery(settings=settings, topics=topics)
        self.topics = (self.discovery.status_topic,)
        self._bridge: BridgeContext | None = None

    async def start(self, bridge: BridgeContext) -> None:
        self._bridge = bridge
        self.discovery.budget = bridge.options.budget is not None
        bridge.bus.subscribe(Connected, lambda event: self._announce())
        bridge.bus.subscribe(Message, self._on_status)
        bridge.bus.subscribe(TwinChanged, self._on_changed)

    def _announce(self) -> None:
        bridge = self._bridge
        assert bridge is not None
        devices = bridge.fleet.devices()
        twins = {d.id: t for d in devices if (t := bridge.fleet.twin(d.id)) is not None}
        self.discovery.announce_all(devices, twins, bridge.publish_retained, gone=bridge.fleet.gone())

    def _on_status(self, event: Message) -> None:
        if event.topic == self.discovery.status_topic and event.payload.strip() == b"online":
            self._announce()

    def _on_changed(self, event: TwinChanged) -> None:
        bridge = self._bridge
        assert bridge is not None
        info, twin = bridge.fleet.info(event.device), bridge.fleet.twin(event.device)
        if info is not None and twin is not None:
            self.discovery.changed(info, twin, bridge.publish_retained)
