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
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import BridgeHealth, EventType
from contracts.topics import Topics
from twin.adapter import Adapter, ReportedPatch
from twin.config import BridgeOptions, MqttSettings, TlsSettingsError
from twin.datalock import DataDirLock
from twin.engine import TwinEngine
from twin.extensions import BridgeContext, Connected, EventBus, Extension, Message, TwinChanged
from twin.homeassistant import DEFAULT_PREFIX, HomeAssistantExtension, HomeAssistantSettings
from twin.http import REQUEST_METER
from twin.intake import Arrival, best_effort_transaction
from twin.jsonenc import dumps
from twin.metrics import RECONNECTS, STORE_WRITABLE
from twin.mqtt import check_topic_levels, describe_error, disconnect_shielded, mqtt_client
from twin.outbound import ReplyTo
from twin.polling import Poller
from twin.publisher import Publisher
from twin.retention import StoreRetention
from twin.session import SessionClock
from twin.shard import Shard
from twin.store import Store, StoreError, StoreUnavailable

__all__ = [
    "OUTBOX_LIMIT",
    "PUBLISH_WINDOW",
    "BridgeRuntime",
]

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
        #: one process per store (held while running; see twin.datalock)
        self.data_lock = DataDirLock(self.vendor_dir, what=f"{adapter.vendor} bridge")
        self.store = Store(
            path=self.vendor_dir / "twins.sqlite",
            synchronous="FULL" if store_synchronous == "FULL" else "NORMAL",
        )
        # one client id per bridge on a broker: bridges of two base topics (two fleets) must not take
        # each other's session; the default tree keeps the id it always had
        prefix = "locktwin" if base_topic == "locktwin" else base_topic.replace("/", "-")
        default_id = f"{prefix}-{adapter.vendor}" + (f"-{self.shard.label}" if sharded else "")
        self.client_id = client_id or mqtt.client_id or default_id
        self.bus = EventBus()
        self.engine = TwinEngine(
            adapter=adapter,
            store=self.store,
            topics=self.topics,
            options=self.options,
            owns=self.shard.owns,
            on_published=lambda device: self.bus.emit(TwinChanged(device)),
        )
        self.connected = anyio.Event()
        self.ready = anyio.Event()
        self.publisher = Publisher(window=PUBLISH_WINDOW, limit=OUTBOX_LIMIT)
        self.engine.out.use(self.publisher)
        self.session = SessionClock(store=self.store, marker_topic=self.topics.bridge_session_marker)
        self.store.writable_listeners.append(self._on_store)
        self._health = BridgeHealth(status="ok", since=datetime.now(UTC))
        self._budget_limit = 0
        STORE_WRITABLE.labels(adapter.vendor).set(1)
        self.homeassistant = homeassistant or HomeAssistantSettings()
        retention = StoreRetention(journal_days=self.options.journal_days, commands_days=self.options.commands_days)
        self.extensions: list[Extension] = [Poller(), retention]
        if self.homeassistant.enabled:
            self.extensions.append(HomeAssistantExtension(settings=self.homeassistant, topics=self.topics))
        #: never answered on, discovery on or off: a config written there is an entity in Home Assistant
        self._reserved = (self.topics.base, self.homeassistant.prefix, DEFAULT_PREFIX)

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            if not self.data_lock.held:
                stack.enter_context(self.data_lock)
            self.store.open()
            stack.callback(self.store.close)
            stack.callback(self._persist)  # before the store closes (callbacks run last first)
            sink = _Sink(self.engine, self.vendor_dir)
            # requests made outside a gated call (listing devices, a token refresh at start) count too;
            # every task of this bridge inherits the meter, the gate sets its own around each call
            ledger = self.engine.gate.ledger
            REQUEST_METER.set(ledger.spend)
            await self.adapter.start(sink)
            stack.push_async_callback(self.adapter.stop)
            devices = [d for d in await self.adapter.list_devices() if self.shard.owns(d.id)]
            extensions = [*self.extensions, *self.adapter.extensions()]
            # exact topics an extension reads (routing by table)
            routes = {topic for ext in extensions for topic in ext.topics}
            self._check_topics([d.id for d in devices])
            async with anyio.create_task_group() as tg:
                try:
                    await self.engine.start(tg, devices)
                except StoreUnavailable as exc:
                    raise StoreError(f"cannot start: {exc}") from None
                context = BridgeContext(
                    vendor=self.adapter.vendor,
                    topics=self.topics,
                    options=self.options,
                    store=self.store,
                    fleet=self.engine.fleet,
                    gate=self.engine.gate,
                    bus=self.bus,
                    sink=sink,
                    read=self.engine.reads.read,
                    publish_retained=self.engine.out.send_retained,
                    task_group=tg,
                )
                started: list[Extension] = []
                try:
                    for ext in extensions:
                        await ext.start(context)
                        started.append(ext)
                    self.store.checkpoint_elsewhere()
                    tg.start_soon(self._housekeeping)
                    self.ready.set()
                    await self._mqtt_loop(routes)
                finally:
                    with anyio.CancelScope(shield=True):
                        for ext in reversed(started):
                            await ext.stop()

    # -- MQTT --------------------------------------------------------------------------------------
    def _check_topics(self, devices: list[str]) -> None:
        names = {
            "base topic": self.topics.base.split("/"),
            "vendor": [self.adapter.vendor],
            "device ids": devices,
            "actions": list(self.adapter.actions()),
        }
        if self.homeassistant.enabled:
            names["Home Assistant prefix"] = self.homeassistant.prefix.split("/")
        check_topic_levels(self.mqtt, names)

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.bridge_state, b"offline", qos=1, retain=True)
        client = mqtt_client(self.mqtt, identifier=self.client_id, will=will, persistent_session=True)
        return self.publisher.prepare(client)

    async def _mqtt_loop(self, routes: set[str]) -> None:
        delay = 0.5
        while True:
            lost = False
            connected = False
            try:
                async with disconnect_shielded(self._client()) as client:
                    delay = 0.5
                    connected = True
                    await self._on_connect(client, routes)
                    try:
                        async for message in client.messages:
                            await self._on_message(message, routes)
                    except aiomqtt.MqttError:
                        lost = True
                        raise
                    finally:
                        if not lost:
                            # A clean stop: let queued answers reach the broker, then say so
                            # ourselves (the broker's will covers a crash).
                            with anyio.move_on_after(2, shield=True):
                                await self.publisher.drained()
                                self.session.heartbeat()
                                await client.publish(self.topics.bridge_state, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TlsSettingsError) as exc:
                # One line saying why (a refused certificate, a wrong CA...), never a traceback or a key.
                RECONNECTS.labels(self.adapter.vendor).inc()
                what = "connection lost" if connected else "cannot connect"
                log.warning("%s; %s, retrying in %.1fs", describe_error(exc, self.mqtt), what, delay)
            finally:
                self.session.disconnected()
                self.publisher.detach()
                self.connected = anyio.Event()
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.mqtt.reconnect_max)

    async def _on_connect(self, client: aiomqtt.Client, routes: set[str]) -> None:
        if self.mqtt.protocol == "5":
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            await client.subscribe([(t, options) for t in self.topics.subscriptions])
        else:
            await client.subscribe([(t, 1) for t in self.topics.subscriptions])
        await client.subscribe([(t, 1) for t in (*sorted(routes), self.session.marker_topic)])
        marker = self.session.connected(session_present=self.publisher.session_present)
        if marker is not None:
            # Queued behind whatever the broker kept for our session: what arrives before it may
            # have waited there since we were last live (twin.session).
            await client.publish(self.session.marker_topic, marker, qos=1)
        await client.publish(self.topics.bridge_state, b"online", qos=1, retain=True)
        self.publisher.attach(client)
        self.engine.out.republish_all()
        self._publish_health()
        self._publish_budget()
        self.bus.emit(Connected())
        self.connected.set()
        log.info("%s bridge connected to %s as %s", self.adapter.vendor, self.mqtt.url, self.client_id)

    async def _on_message(self, message: aiomqtt.Message, routes: set[str]) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        topic = message.topic.value
        if topic == self.session.marker_topic:
            self.session.on_marker(payload)
            return
        if topic in routes:
            self.bus.emit(Message(topic, payload))
            return
        inbound = self.topics.parse(topic)
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
                self.engine.refuse(inbound, payload, error, transaction=best_effort_transaction(payload))
                return
            reply = ReplyTo(topic=response_topic, correlation=getattr(props, "CorrelationData", None))
        expiry_left = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        arrival = Arrival(queued_since=self.session.queued_since, expiry_left=expiry_left)
        try:
            await self.engine.handle(inbound, payload, retained=bool(message.retain), reply=reply, arrival=arrival)
        except Exception:
            # Input must never take the process down; the engine answers what it can.
            log.exception("failed to handle a message on %s", topic)

    def _reply_allowed(self, topic: str) -> bool:
        if "+" in topic or "#" in topic or topic.startswith("$"):
            return False
        return not any(topic == r or topic.startswith(r + "/") for r in self._reserved)

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(CHECKPOINT_INTERVAL)
            try:
                if not self.store.writable and not self.store.probe():
                    continue  # a full disk: nothing else can be written either
                self._persist()
                self.store.flush()  # deferred writes are at most this old when the process dies
                self.session.heartbeat()
                self._publish_budget(only_if_changed=True)
                await anyio.to_thread.run_sync(self.store.checkpoint)
            except (sqlite3.Error, StoreUnavailable) as exc:  # busy or full disk: the next round tries again
                log.warning("store checkpoint failed: %s", exc)

    # -- health ------------------------------------------------------------------------------------
    def _on_store(self, writable: bool) -> None:
        STORE_WRITABLE.labels(self.adapter.vendor).set(1 if writable else 0)
        now = datetime.now(UTC)
        if writable:
            self._health = BridgeHealth(status="ok", since=now)
        else:
            self._health = BridgeHealth(status="degraded", reason=f"store: {self.store.unwritable}", since=now)
        self._publish_health()

    def _persist(self) -> None:
        """The budget ledger and the confirmation timing into the store's next commit."""
        self.engine.gate.ledger.persist()
        self.engine.timing.persist()

    def _publish_budget(self, *, only_if_changed: bool = False) -> None:
        """``bridge/{vendor}/budget``: at most once a second, when it changed (or on connect)."""
        gate = self.engine.gate
        changed = gate.ledger.take_changed() or gate.limit != self._budget_limit
        if only_if_changed and not changed:
            return
        self._budget_limit = gate.limit
        document = gate.ledger.document(limit=gate.limit)
        self.engine.out.send_retained(self.topics.bridge_budget, dumps(document.model_dump(mode="json")))

    def _publish_health(self) -> None:
        self.engine.out.send_retained(self.topics.bridge_health, dumps(self._health.model_dump(mode="json")))
