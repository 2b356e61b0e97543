"""``locktwin homeassistant clear-legacy``: empty the discovery configs of earlier versions.

Earlier versions announced each device under a node id that named the device
(``<prefix>/<component>/locktwin_<vendor>_<device>/<component>/config``). A broker ACL cannot grant
those per vendor, since its wildcards match whole levels, so the bridges now announce under
``locktwin_<vendor>`` (:mod:`twin.homeassistant`) and, with the shipped ``mosquitto/acl``, may not
write the old topics any more. Run this once, after upgrading, as a user that may read the bridges'
device lists and write the discovery prefix (``homeassistant`` in the shipped ACL). It:

1. reads every bridge's retained device list (``<base>/bridge/<vendor>/devices`` and its pages, and
   each shard's) and the retained discovery configs, and keeps the old topics of listed devices that
   still hold a config (nothing else: another integration's configs are never touched);
2. publishes an empty retained payload on each (Home Assistant removes those entities);
3. reads the configs again and fails if one is still there (the broker refused: not allowed);
4. publishes ``online`` on ``<prefix>/status``, as Home Assistant does when it starts, so that the
   bridges announce again and Home Assistant finds the same entities (same unique ids) at the new topics.

It knows when the retained messages are all in without waiting on a clock: after subscribing, it
publishes a probe to its own reply topic (``locktwin-replies/<user>/...``); the broker sends retained
messages at subscribe time, so they all come before the probe.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import aiomqtt
import anyio
from pydantic import ValidationError

from contracts.messages import BridgeDevices
from contracts.topics import Topics
from twin.config import LocktwinSettings
from twin.homeassistant import HomeAssistantDiscovery

__all__ = ["LegacyCleanup", "clear_legacy_discovery"]


@dataclass
class LegacyCleanup:
    """What :func:`clear_legacy_discovery` found and did."""

    #: old topics that held a config, sorted
    found: list[str] = field(default_factory=list)
    #: of those, the ones still holding a config after clearing (the broker refused our publishes)
    remaining: list[str] = field(default_factory=list)
    #: devices listed by the bridges, by vendor (and shard: ``vendor/shard``)
    devices: dict[str, int] = field(default_factory=dict)


def _list_key(base: str, topic: str) -> tuple[str, str | None] | None:
    """(vendor, shard) of a device-list page topic, or None."""
    parts = topic.removeprefix(f"{base}/bridge/").split("/")
    if len(parts) in (2, 3) and parts[1] == "devices":
        return parts[0], None
    if len(parts) in (4, 5) and parts[1] == "shards" and parts[3] == "devices":
        return parts[0], parts[2]
    return None


async def _retained(client: aiomqtt.Client, filters: list[str], probe: str) -> dict[str, bytes]:
    """The retained messages on ``filters`` (subscribed now), complete once our probe comes back."""
    token = uuid.uuid4().hex.encode()
    await client.subscribe([(f, 1) for f in filters])
    await client.subscribe(probe, qos=1)
    await client.publish(probe, token, qos=1)
    got: dict[str, bytes] = {}
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if message.topic.value == probe:
            if payload == token:
                break
        elif message.retain and payload:
            got[message.topic.value] = payload
    await client.unsubscribe([*filters, probe])
    return got


def _legacy_topics(settings: LocktwinSettings, lists: dict[str, bytes], result: LegacyCleanup) -> set[str]:
    base = settings.base_topic
    devices: dict[tuple[str, str | None], list[str]] = {}
    for topic, payload in lists.items():
        key = _list_key(base, topic)
        if key is None:
            continue
        try:
            page = BridgeDevices.model_validate_json(payload)
        except ValidationError:
            continue  # not a device list; nothing of ours to clear for it
        devices.setdefault(key, []).extend(entry.id for entry in page.devices)
    legacy: set[str] = set()
    for (vendor, shard), ids in sorted(devices.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        discovery = HomeAssistantDiscovery(
            settings=settings.homeassistant, topics=Topics(base=base, vendor=vendor, shard=shard)
        )
        result.devices[vendor if shard is None else f"{vendor}/{shard}"] = len(ids)
        for device in ids:
            legacy.update(discovery.legacy_topics(device))
        if (bridge := discovery.legacy_bridge_topic()) is not None:
            legacy.add(bridge)
    return legacy


async def clear_legacy_discovery(
    *, settings: LocktwinSettings, dry_run: bool = False, timeout: float = 30.0, client_id: str | None = None
) -> LegacyCleanup:
    """Empty the old discovery topics of every device the bridges list (see the module's docstring)."""
    mqtt = settings.mqtt
    base, prefix = settings.base_topic, settings.homeassistant.prefix
    probe = f"locktwin-replies/{mqtt.username or 'anonymous'}/clear-legacy-{uuid.uuid4().hex}"
    lists = [f"{base}/bridge/+/devices", f"{base}/bridge/+/devices/+"]
    lists += [f"{base}/bridge/+/shards/+/devices", f"{base}/bridge/+/shards/+/devices/+"]
    configs = [f"{prefix}/+/+/+/config"]
    result = LegacyCleanup()
    with anyio.fail_after(timeout):
        async with aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            username=mqtt.username,
            password=mqtt.secret(),
            identifier=client_id or f"locktwin-clear-legacy-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            legacy = _legacy_topics(settings, await _retained(client, lists, probe), result)
            result.found = sorted(legacy & set(await _retained(client, configs, probe)))
            if dry_run or not result.found:
                return result
            for topic in result.found:
                await client.publish(topic, b"", qos=1, retain=True)
            result.remaining = sorted(legacy & set(await _retained(client, configs, probe)))
            if not result.remaining:
                await client.publish(f"{prefix}/status", b"online", qos=1)
    return result
