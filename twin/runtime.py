"""The bridge runtime: one adapter, its store, its engine and its MQTT connection.

It subscribes to the adapter's command topics, routes each message by a table to the engine, and
publishes what the engine renders. On (re)connect it republishes every retained topic from the
store; the broker holds the last will (``offline``) while we are gone. Reconnecting is ours to do
(aiomqtt raises, it does not loop), with capped exponential backoff.

MQTT v5 with a persistent session (``clean_start`` false, a session expiry), QoS 1 subscriptions
with *retain as published* so that a retained command is recognised and refused even when it is
published while we are connected, and TCP_NODELAY on the socket (QoS 1 round trips otherwise wait
~40-90 ms on Nagle meeting delayed ACKs); the client, TLS included, comes from twin.mqtt. A
connection that fails is logged in one line saying why (a refused certificate, a wrong CA, a name
that does not match) and retried with the same backoff. Names the broker cannot carry in a topic
(``mqtt.dots_in_topics``) stop the bridge at start, before anything is published.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.lowlevel
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import EventType
from contracts.topics import Topics
from twin.adapter import Adapter, ReportedPatch
from twin.config import BridgeOptions, MqttSettings, TlsSettingsError
from twin.engine import EngineOptions, TwinEngine
from twin.homeassistant import HomeAssistantDiscovery, HomeAssistantSettings
from twin.intake import best_effort_transaction
from twin.metrics import RECONNECTS
from twin.mqtt import check_topic_levels, describe_error, mqtt_client
from twin.outbound import DEVICES_PAGE_BYTES, ReplyTo
from twin.polling import Poller
from twin.publisher import Publisher
from twin.shard import Shard
from twin.store import Store

__all__ = ["BridgeRuntime"]

log = logging.getLogger(__name__)


class _Sink:
    """What the adapter sees of the runtime (the BridgeSink protocol)."""

    def __init__(self, engine: TwinEngine, data_dir: Path) -> None:
        self._engine = engine
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        return await self._engine.report(device_id, patch, source=source)

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        await self._engine.event(device_id, type, data)


#: QoS 1 publishes awaiting their PUBACK at once, per bridge
PUBLISH_WINDOW = 64
#: messages kept for the broker while it is away (the oldest go first). Not a limit while connected:
#: republishing a fleet of 100,000 devices queues 200,000+ messages at once, none of which may go.
OUTBOX_LIMIT = 100_000
#: seconds between copies of the store's write-ahead log into its file, and the longest a deferred
#: write waits for its commit (see twin.store)
CHECKPOINT_INTERVAL = 1.0
#: journal entries past ``journal_days`` deleted per batch (~1 ms); up to PRUNE_BATCHES batches a
#: round, commands running in between, keep up with ~10,000 new entries a second
PRUNE_BATCH = 500
PRUNE_BATCHES = 20


class BridgeRuntime:
    """Runs one adapter until cancelled. Construct, then ``await run()`` (or use ``started``)."""

    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        mqtt: MqttSettings,
        data_dir: Path,
        base_topic: str = "locktwin",
        options: BridgeOptions | None = None,
        store_synchronous: str = "NORMAL",
        client_id: str | None = None,
        homeassistant: HomeAssistantSettings | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.adapter = adapter
        self.mqtt = mqtt
        self.shard = shard or Shard(0, 1)
        sharded = self.shard.count > 1
        self.vendor_dir = data_dir / (f"{adapter.vendor}-{self.shard.label}" if sharded else adapter.vendor)
        self.topics = Topics(base=base_topic, vendor=adapter.vendor, shard=self.shard.label if sharded else None)
        self.options = options or BridgeOptions()
        self.store = Store(
            path=self.vendor_dir / "twins.sqlite",
            synchronous="FULL" if store_synchronous == "FULL" else "NORMAL",
        )
        default_id = f"locktwin-{adapter.vendor}" + (f"-{self.shard.label}" if sharded else "")
        self.client_id = client_id or mqtt.client_id or default_id
        self.engine = TwinEngine(
            adapter=adapter,
            store=self.store,
            topics=self.topics,
            options=EngineOptions(
                hold=frozenset(self.options.hold),
                default_expiry=self.options.default_expiry,
                max_expiry=self.options.max_expiry,
                max_in_flight=self.options.max_in_flight,
                call_timeout=self.options.call_timeout,
                publish_coalesce=self.options.publish_coalesce,
            ),
            owns=self.shard.owns,
        )
        self.connected = anyio.Event()
        self.ready = anyio.Event()
        self.publisher = Publisher(window=PUBLISH_WINDOW, limit=OUTBOX_LIMIT)
        self.engine.out.sender = self.publisher.send
        self.engine.out.feeder = self.publisher.feed
        ha = homeassistant or HomeAssistantSettings()
        self.discovery = HomeAssistantDiscovery(settings=ha, topics=self.topics) if ha.enabled else None
        # Exact topics served besides the contract's command topics (routing by table).
        self._routes: dict[str, Callable[[bytes], None]] = {}
        if self.discovery is not None:
            self._routes[self.discovery.status_topic] = self._on_homeassistant_status
            self.engine.out.listeners.append(self._on_twin_changed)

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            self.store.open()
            stack.callback(self.store.close)
            await self.adapter.start(_Sink(self.engine, self.vendor_dir))
            stack.push_async_callback(self.adapter.stop)
            devices = [d for d in await self.adapter.list_devices() if self.shard.owns(d.id)]
            self._check_topics([d.id for d in devices])
            async with anyio.create_task_group() as tg:
                await self.engine.start(tg, devices)
                tg.start_soon(Poller(self.engine).run)
                self.store.checkpoint_elsewhere()
                tg.start_soon(self._checkpoint_loop)
                self.ready.set()
                await self._mqtt_loop()

    # -- MQTT --------------------------------------------------------------------------------------
    def _check_topics(self, devices: list[str]) -> None:
        names = {
            "base topic": self.topics.base.split("/"),
            "vendor": [self.adapter.vendor],
            "device ids": devices,
            "actions": list(self.adapter.actions()),
        }
        if self.discovery is not None:
            names["Home Assistant prefix"] = self.discovery.settings.prefix.split("/")
        check_topic_levels(self.mqtt, names)

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.bridge_state, b"offline", qos=1, retain=True)
        client = mqtt_client(self.mqtt, identifier=self.client_id, will=will, persistent_session=True)
        return self.publisher.prepare(client)

    async def _mqtt_loop(self) -> None:
        delay = 0.5
        while True:
            lost = False
            connected = False
            try:
                async with self._client() as client:
                    delay = 0.5
                    connected = True
                    await self._on_connect(client)
                    try:
                        async for message in client.messages:
                            await self._on_message(message)
                    except aiomqtt.MqttError:
                        lost = True
                        raise
                    finally:
                        if not lost:
                            # A clean stop: let queued answers reach the broker, then say so
                            # ourselves (the broker's will covers a crash).
                            with anyio.move_on_after(2, shield=True):
                                await self.publisher.drained()
                                await client.publish(self.topics.bridge_state, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TlsSettingsError) as exc:
                # One line saying why (a refused certificate, a wrong CA...), never a traceback or a key.
                RECONNECTS.labels(self.adapter.vendor).inc()
                what = "connection lost" if connected else "cannot connect"
                log.warning("%s; %s, retrying in %.1fs", describe_error(exc, self.mqtt), what, delay)
            finally:
                self.publisher.detach()
                self.connected = anyio.Event()
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.mqtt.reconnect_max)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        if self.mqtt.protocol == "5":
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            await client.subscribe([(t, options) for t in self.topics.subscriptions])
        else:
            await client.subscribe([(t, 1) for t in self.topics.subscriptions])
        if self._routes:
            await client.subscribe([(t, 1) for t in self._routes])
        await client.publish(self.topics.bridge_state, b"online", qos=1, retain=True)
        self.publisher.attach(client)
        limit = self.publisher.maximum_packet_size  # room for the topic and the packet's header
        self.engine.out.page_bytes = (
            DEVICES_PAGE_BYTES if limit is None else max(1024, min(DEVICES_PAGE_BYTES, limit - 512))
        )
        self.engine.out.republish_all()
        self._announce()
        self.connected.set()
        log.info("%s bridge connected to %s as %s", self.adapter.vendor, self.mqtt.url, self.client_id)

    # -- Home Assistant discovery -----------------------------------------------------------------
    def _announce(self) -> None:
        if self.discovery is not None:
            self.discovery.announce_all(self.engine.out.devices, self.engine.twins, self.engine.out.send_retained)

    def _on_homeassistant_status(self, payload: bytes) -> None:
        if payload.strip() == b"online":  # HA restarted: it forgets non-retained state, announce again
            self._announce()

    def _on_twin_changed(self, device: str) -> None:
        if self.discovery is not None and device in self.engine.devices:
            info = self.engine.devices[device].info
            self.discovery.changed(info, self.engine.twins[device], self.engine.out.send_retained)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        route = self._routes.get(message.topic.value)
        if route is not None:
            route(payload)
            return
        inbound = self.topics.parse(message.topic.value)
        if inbound is None:
            return
        reply = None
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if response_topic:
            if not self._reply_allowed(response_topic):
                # Answering there would let any client that may send commands write into topics
                # only the bridge may write (a device's state, Home Assistant's discovery).
                error = ErrorInfo.of(
                    ErrorCode.INVALID_PAYLOAD,
                    f"response topic not allowed under {self.topics.base}/ or the discovery prefix",
                )
                self.engine.out.rejected(
                    inbound.device, inbound.response_suffix, best_effort_transaction(payload), error, None
                )
                return
            reply = ReplyTo(topic=response_topic, correlation=getattr(props, "CorrelationData", None))
        try:
            await self.engine.handle(inbound, payload, retained=bool(message.retain), reply=reply)
        except Exception:
            # Input must never take the process down; the engine answers what it can.
            log.exception("failed to handle a message on %s", message.topic.value)

    def _reply_allowed(self, topic: str) -> bool:
        reserved = [self.topics.base]
        if self.discovery is not None:
            reserved.append(self.discovery.settings.prefix)
        if "+" in topic or "#" in topic or topic.startswith("$"):
            return False
        return not any(topic == r or topic.startswith(r + "/") for r in reserved)

    async def _checkpoint_loop(self) -> None:
        while True:
            await anyio.sleep(CHECKPOINT_INTERVAL)
            try:
                self.store.flush()  # deferred writes are at most this old when the process dies
                await self._prune_journal()
                await anyio.to_thread.run_sync(self.store.checkpoint)
            except sqlite3.Error as exc:  # busy or full disk: the next round tries again
                log.warning("store checkpoint failed: %s", exc)

    async def _prune_journal(self) -> None:
        """Keep the journal to ``journal_days``: state changes of a moving fleet are most of a store's
        growth (every reported change of battery or position is an entry)."""
        if not self.options.journal_days:
            return
        before = time.time() - self.options.journal_days * 86_400
        for _ in range(PRUNE_BATCHES):
            if self.store.prune_journal(before=before, limit=PRUNE_BATCH) < PRUNE_BATCH:
                return
            await anyio.lowlevel.checkpoint()
