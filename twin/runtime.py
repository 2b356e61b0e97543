"""The bridge runtime: one adapter, its store, its engine and its MQTT connection.

It subscribes to the adapter's command topics, routes each message by a table to the engine, and
publishes what the engine renders. On (re)connect it republishes every retained topic from the
store; the broker holds the last will (``offline``) while we are gone. Reconnecting is ours to do
(aiomqtt raises, it does not loop), with capped exponential backoff.

MQTT v5 with a persistent session (``clean_start`` false, a session expiry), QoS 1 subscriptions
with *retain as published* so that a retained command is recognised and refused even when it is
published while we are connected, and TCP_NODELAY on the socket (QoS 1 round trips otherwise wait
~40-90 ms on Nagle meeting delayed ACKs).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.lowlevel
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import EventType
from contracts.topics import Topics
from twin.adapter import Adapter, ReportedPatch
from twin.config import BridgeOptions, MqttSettings
from twin.datalock import DataDirLock
from twin.engine import EngineOptions, TwinEngine
from twin.homeassistant import DEFAULT_PREFIX, HomeAssistantDiscovery, HomeAssistantSettings
from twin.intake import Arrival, best_effort_transaction
from twin.metrics import RECONNECTS
from twin.outbound import DEVICES_PAGE_BYTES, ReplyTo
from twin.polling import Poller
from twin.publisher import Publisher
from twin.session import SessionClock
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


@asynccontextmanager
async def _disconnect_shielded(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client``, whose goodbye (DISCONNECT, and waiting for the broker to close) runs even
    when the bridge is being cancelled: aiomqtt's exit awaits it, and a cancelled wait left the
    disconnection's outcome to a future nobody read ("Future exception was never retrieved")."""
    await client.__aenter__()
    try:
        yield client
    finally:
        with anyio.move_on_after(2, shield=True):
            await client.__aexit__(None, None, None)
        # A connection the broker dropped while we were stopping (it stopped first: ``docker compose
        # down``, Ctrl-C in a terminal) leaves its error in aiomqtt's future, which nobody else reads.
        lost = getattr(client, "_disconnected", None)
        if isinstance(lost, asyncio.Future) and lost.done() and not lost.cancelled():
            lost.exception()


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
        self.session = SessionClock(store=self.store, marker_topic=self.topics.bridge_session_marker)
        self.engine.out.sender = self.publisher.send
        self.engine.out.feeder = self.publisher.feed
        ha = homeassistant or HomeAssistantSettings()
        self.discovery = HomeAssistantDiscovery(settings=ha, topics=self.topics) if ha.enabled else None
        #: never answered on, discovery on or off: a config written there is an entity in Home Assistant
        self._reserved = (self.topics.base, ha.prefix, DEFAULT_PREFIX)
        # Exact topics served besides the contract's command topics (routing by table).
        self._routes: dict[str, Callable[[bytes], None]] = {}
        if self.discovery is not None:
            self._routes[self.discovery.status_topic] = self._on_homeassistant_status
            self.engine.out.listeners.append(self._on_twin_changed)

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            if not self.data_lock.held:
                stack.enter_context(self.data_lock)
            self.store.open()
            stack.callback(self.store.close)
            await self.adapter.start(_Sink(self.engine, self.vendor_dir))
            stack.push_async_callback(self.adapter.stop)
            devices = [d for d in await self.adapter.list_devices() if self.shard.owns(d.id)]
            async with anyio.create_task_group() as tg:
                await self.engine.start(tg, devices)
                tg.start_soon(Poller(self.engine).run)
                self.store.checkpoint_elsewhere()
                tg.start_soon(self._checkpoint_loop)
                self.ready.set()
                await self._mqtt_loop()

    # -- MQTT --------------------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.bridge_state, b"offline", qos=1, retain=True)
        session: dict[str, Any]
        if self.mqtt.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.mqtt.session_expiry
            session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": props}
        else:
            session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        client = aiomqtt.Client(
            self.mqtt.host,
            self.mqtt.port,
            username=self.mqtt.username,
            password=self.mqtt.secret(),
            identifier=self.client_id,
            will=will,
            keepalive=self.mqtt.keepalive,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            **session,
        )
        return self.publisher.prepare(client)

    async def _mqtt_loop(self) -> None:
        delay = 0.5
        while True:
            lost = False
            try:
                async with _disconnect_shielded(self._client()) as client:
                    delay = 0.5
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
                                self.session.heartbeat()
                                await client.publish(self.topics.bridge_state, b"offline", qos=1, retain=True)
            except aiomqtt.MqttError as exc:
                RECONNECTS.labels(self.adapter.vendor).inc()
                log.warning("MQTT connection lost (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self.session.disconnected()
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
        await client.subscribe([(t, 1) for t in (*self._routes, self.session.marker_topic)])
        marker = self.session.connected(session_present=self.publisher.session_present)
        if marker is not None:
            # Queued behind whatever the broker kept for our session: what arrives before it may
            # have waited there since we were last live (twin.session).
            await client.publish(self.session.marker_topic, marker, qos=1)
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
        if message.topic.value == self.session.marker_topic:
            self.session.on_marker(payload)
            return
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
        expiry_left = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        arrival = Arrival(queued_since=self.session.queued_since, expiry_left=expiry_left)
        try:
            await self.engine.handle(inbound, payload, retained=bool(message.retain), reply=reply, arrival=arrival)
        except Exception:
            # Input must never take the process down; the engine answers what it can.
            log.exception("failed to handle a message on %s", message.topic.value)

    def _reply_allowed(self, topic: str) -> bool:
        if "+" in topic or "#" in topic or topic.startswith("$"):
            return False
        return not any(topic == r or topic.startswith(r + "/") for r in self._reserved)

    async def _checkpoint_loop(self) -> None:
        while True:
            await anyio.sleep(CHECKPOINT_INTERVAL)
            try:
                self.store.flush()  # deferred writes are at most this old when the process dies
                self.session.heartbeat()
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
