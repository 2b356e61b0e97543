"""The fleet service process: two MQTT connections, the index, jobs, zones, rules, the HTTP API.

- **follower** (clean session): subscribes to every vendor's and shard's retained ``state`` and
  ``twin`` and device list pages and keeps the index; a restart reads them afresh from the broker
  instead of a backlog of every change while it was away. The index counts as loaded once no
  retained message came for ``settle_quiet`` seconds (at most ``settle_max``); jobs, zone events
  and the keep-locked rule wait for that.
- **control** (persistent session, last will ``offline`` on ``{base}/fleet/state``): requests on
  ``{base}/fleet/request/+``, answers on the service's reply topic (queued by the broker while the
  service is away), and everything the service publishes: commands, answers, retained job and zone
  documents (republished from the store on every connect), events.

Reconnecting is ours to do (aiomqtt raises), with capped exponential backoff, as in the bridges.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import orjson
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.fleet import FleetTopics
from twin.asgi import serve_asgi
from twin.config import MqttSettings
from twin.fleet.clock import Clock, SystemClock
from twin.fleet.commands import CommandSender
from twin.fleet.gbfs import GbfsFeed
from twin.fleet.http import build_app
from twin.fleet.index import Change, DeviceRecord, FleetIndex
from twin.fleet.jobs import JobManager
from twin.fleet.mqtt import fleet_client, reply_topic
from twin.fleet.requests import FleetRequests
from twin.fleet.rules import KeepLocked
from twin.fleet.search import Search
from twin.fleet.settings import FleetSettings
from twin.fleet.store import FLUSH_INTERVAL, FleetStore
from twin.fleet.zones import ZoneBook
from twin.publisher import Publisher

__all__ = ["FleetService"]

log = logging.getLogger(__name__)

PUBLISH_WINDOW = 64
OUTBOX_LIMIT = 200_000
_NOT_VENDORS = frozenset({"bridge", "fleet"})


class FleetService:
    """Construct, then ``await run()`` until cancelled; ``ready`` is set once the index is loaded."""

    def __init__(
        self,
        *,
        settings: FleetSettings,
        mqtt: MqttSettings,
        data_dir: Path,
        base_topic: str = "locktwin",
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.base = base_topic
        self.clock = clock or SystemClock()
        self.topics = FleetTopics(base_topic)
        # one client id per fleet service on a broker: as the bridges', the base topic's when it is not
        # the default tree, so that services of two trees do not take each other's session
        prefix = "locktwin" if base_topic == "locktwin" else base_topic.replace("/", "-")
        self.client_id = settings.client_id or f"{prefix}-fleet"
        self.store = FleetStore(path=data_dir / "fleet" / "fleet.sqlite")
        self.index = FleetIndex()
        self.search = Search(index=self.index, clock=self.clock.now)
        self.publisher = Publisher(window=PUBLISH_WINDOW, limit=OUTBOX_LIMIT)
        self.reply_topic = reply_topic(mqtt, self.client_id) if mqtt.protocol == "5" else None
        self.sender = CommandSender(
            base=base_topic, reply_topic=self.reply_topic, publish=self._send_command, grace=settings.answer_grace
        )
        self.ready = anyio.Event()
        self.connected = anyio.Event()
        self.http_url: str | None = None
        self.zones = ZoneBook(
            store=self.store, index=self.index, topics=self.topics, send=self._send, on_membership=self._membership
        )
        self.rules = KeepLocked(
            store=self.store,
            index=self.index,
            zones=self.zones,
            sender=self.sender,
            timeout=settings.rule_timeout,
            retry=settings.rule_retry,
        )
        self.jobs = JobManager(
            store=self.store,
            index=self.index,
            search=self.search,
            sender=self.sender,
            topics=self.topics,
            send=self._send,
            clock=self.clock,
            ready=self.ready,
        )
        self.gbfs = (
            GbfsFeed(settings=settings.gbfs, index=self.index, zones=self.zones, store=self.store, clock=self.clock)
            if settings.gbfs.enabled
            else None
        )
        self.requests = FleetRequests(
            search=self.search,
            jobs=self.jobs,
            zones=self.zones,
            max_bytes=settings.max_request_bytes,
            on_zones_changed=self._zones_changed,
        )
        self._last_retained = time.monotonic()
        self._following = anyio.Event()
        self._state_routes: dict[str, Callable[[str, str, bytes], None]] = {
            "state": self._on_state,
            "twin": self._on_twin,
        }

    # -- running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            self.store.open()
            stack.callback(self.store.close)
            self.zones.load(self.settings.zones_file)
            self.jobs.load()
            if self.gbfs is not None:
                self.gbfs.load()
            app = build_app(search=self.search, jobs=self.jobs, zones=self.zones, gbfs=self.gbfs, health=self.health)
            served = await stack.enter_async_context(
                serve_asgi(app, host=self.settings.http_host, port=self.settings.http_port)
            )
            self.http_url = served.url
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._loop, "follower", self._follow)
                tg.start_soon(self._loop, "control", self._control)
                tg.start_soon(self.sender.run)
                tg.start_soon(self.jobs.run, tg)
                tg.start_soon(self.rules.sweep)
                tg.start_soon(self._flush_loop)
                tg.start_soon(self._settle)
                self.rules.load()

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.publisher.connected,
            "ready": self.ready.is_set(),
            "devices": len(self.index),
            "jobs": len(self.jobs.jobs),
            "zones": len(self.zones.zones),
            "outstanding": len(self.sender.outstanding),
        }

    async def _loop(self, name: str, connect: Callable[[], Awaitable[None]]) -> None:
        delay = 0.5
        while True:
            try:
                await connect()
                delay = 0.5
            except aiomqtt.MqttError as exc:
                log.warning("fleet %s connection lost (%s); reconnecting in %.1fs", name, exc, delay)
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.mqtt.reconnect_max)

    async def _flush_loop(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            self.store.flush()

    async def _settle(self) -> None:
        await self._following.wait()
        started = time.monotonic()
        quiet, longest = self.settings.settle_quiet, self.settings.settle_max
        while True:
            now = time.monotonic()
            if now - self._last_retained >= quiet or now - started >= longest:
                break
            await anyio.sleep(min(quiet, 0.1))
        log.info("fleet index loaded: %d devices in %.1fs", len(self.index), time.monotonic() - started)
        self.zones.live = self.rules.live = True
        self.ready.set()
        self.rules.sweep_once()

    # -- the follower ----------------------------------------------------------------------------
    async def _follow(self) -> None:
        b = self.base
        topics = [
            f"{b}/+/+/state",
            f"{b}/+/+/twin",
            f"{b}/bridge/+/devices",
            f"{b}/bridge/+/devices/+",
            f"{b}/bridge/+/shards/+/devices",
            f"{b}/bridge/+/shards/+/devices/+",
            f"{b}/bridge/+/shards/+/state",
        ]
        if self.reply_topic is None:  # MQTT 3.1.1: answers come on the devices' response topics
            topics.append(f"{b}/+/+/response/+")
        # MQTT 3.1.1: the follower needs no v5 feature, and paho decodes the properties of every v5
        # message into an object of its own (~30 % of the follower's time on 100,000 retained states)
        async with fleet_client(self.mqtt, identifier=f"{self.client_id}-index", v5=False) as client:
            await client.subscribe([(t, 1) for t in topics])
            self._last_retained = time.monotonic()
            self._following.set()
            async for message in client.messages:
                if message.retain:
                    self._last_retained = time.monotonic()
                payload = message.payload if isinstance(message.payload, bytes) else b""
                try:
                    self._on_follow(message.topic.value, payload)
                except Exception:  # a bad retained document must not stop the index
                    log.exception("failed to index %s", message.topic.value)

    def _on_follow(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self.base) + 1 :].split("/")
        if len(parts) == 3 and parts[0] not in _NOT_VENDORS:
            route = self._state_routes.get(parts[2])
            if route is not None:
                route(parts[0], parts[1], payload)
        elif len(parts) == 4 and parts[2] == "response" and parts[0] not in _NOT_VENDORS:
            self.sender.on_answer(payload)
        elif parts[0] == "bridge" and len(parts) >= 3:
            self._on_bridge(parts, payload)

    def _on_state(self, vendor: str, device: str, payload: bytes) -> None:
        doc = _object(payload)
        if doc is None and payload:
            return  # not a state document: leave the index as it is
        change = self.index.apply_state(vendor, device, doc)
        if change.removed:
            return
        self.zones.on_change(change)
        if self.gbfs is not None:
            self.gbfs.on_change(change)
        if change.lock_changed or change.moved or change.entered:
            self.rules.consider(change.record)

    def _on_twin(self, vendor: str, device: str, payload: bytes) -> None:
        doc = _object(payload)
        if doc is None:
            return
        change: Change = self.index.apply_twin(vendor, device, doc)
        self.sender.on_twin(change.record.command)
        if change.command_before != change.record.command:
            self.rules.consider(change.record)

    def _on_bridge(self, parts: list[str], payload: bytes) -> None:
        vendor = parts[1]
        shard = parts[3] if len(parts) >= 5 and parts[2] == "shards" else ""
        tail = parts[5:] if shard else parts[3:]
        leaf = parts[4] if shard else parts[2]
        if leaf == "state" and not tail:  # the bridge's availability (its last will)
            self.index.apply_bridge_state(vendor, shard, payload)
            return
        if leaf != "devices" or len(tail) > 1:
            return
        doc = _object(payload)
        if doc is None:
            return  # a page deleted (an empty retained payload): page 0 says how many there are
        pages, devices = doc.get("pages"), doc.get("devices")
        page = int(tail[0]) if tail and tail[0].isdigit() else 0
        self.index.apply_device_list(
            vendor,
            shard,
            page,
            pages if isinstance(pages, int) else 1,
            [d for d in devices if isinstance(d, dict)] if isinstance(devices, list) else [],
        )

    def _membership(self, rec: DeviceRecord) -> None:
        self.rules.consider(rec)

    def _zones_changed(self) -> None:
        if self.gbfs is not None:
            self.gbfs.zones_changed()

    # -- the control connection ------------------------------------------------------------------
    async def _control(self) -> None:
        will = aiomqtt.Will(self.topics.state, b"offline", qos=1, retain=True)
        client = self.publisher.prepare(fleet_client(self.mqtt, identifier=self.client_id, persistent=True, will=will))
        clean = False
        try:
            async with client:
                if self.mqtt.protocol == "5":
                    options = SubscribeOptions(qos=1, retainAsPublished=True)
                    await client.subscribe([(self.topics.requests, options)])
                else:
                    await client.subscribe(self.topics.requests, qos=1)
                if self.reply_topic is not None:
                    await client.subscribe(self.reply_topic, qos=1)
                await client.publish(self.topics.state, b"online", qos=1, retain=True)
                self.publisher.attach(client)
                self.jobs.republish()
                self.zones.republish()
                self.connected.set()
                log.info("fleet service connected to %s as %s", self.mqtt.url, self.client_id)
                try:
                    async for message in client.messages:
                        self._on_control(message)
                except aiomqtt.MqttError:
                    raise
                except BaseException:
                    clean = True
                    raise
                finally:
                    if clean:
                        with anyio.move_on_after(2, shield=True):
                            self.store.flush()
                            await self.publisher.drained()
                            await client.publish(self.topics.state, b"offline", qos=1, retain=True)
        finally:
            self.publisher.detach()
            self.connected = anyio.Event()

    def _on_control(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if topic == self.reply_topic:
            self.sender.on_answer(payload)
            return
        op = self.topics.op_of(topic)
        if op is None:
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        target = self.topics.response(op)
        if response_topic and not self._reply_allowed(response_topic):
            # answering there would let anyone who may send requests write into the contract's tree
            answer = self.requests.refuse(
                payload,
                f"response topic not allowed under {self.base}/ (use your own locktwin-replies/<user>/... tree)",
            )
            self._send(target, orjson.dumps(answer), False)
            return
        answer = self.requests.handle(op, payload, retained=bool(message.retain))
        if response_topic:
            self._send(response_topic, orjson.dumps(answer), False, correlation)
        else:
            self._send(target, orjson.dumps(answer), False)

    def _reply_allowed(self, topic: str) -> bool:
        if "+" in topic or "#" in topic or topic.startswith("$"):
            return False
        return not (topic == self.base or topic.startswith(self.base + "/"))

    # -- publishing ------------------------------------------------------------------------------
    def _send(self, topic: str, payload: bytes, retain: bool, correlation: bytes | None = None) -> None:
        self.publisher.send(topic, payload, retain=retain, correlation=correlation)

    def _send_command(self, topic: str, payload: bytes, props: Properties | None) -> None:
        self.publisher.send(topic, payload, retain=False, properties=props)


def _object(payload: bytes) -> dict[str, Any] | None:
    if not payload:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
