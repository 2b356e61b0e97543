"""One instance of a bridge among several that share a PostgreSQL store (issue 22).

What an instance runs, in one task group:

- **the writer** (:mod:`twin.pgwriter`): the engines' transactions committed off the event loop on a
  connection of its own, as many per round trip as arrived during the last one;
- **leases** (:mod:`twin.leases`): a tick about once a second renews what it holds and takes what
  its quota wants; a partition it acquires gets an engine of its own, started as a bridge starts
  after a restart (:mod:`twin.partitions`); a partition lost or released ends its engine;
- **intake** (:mod:`twin.clusterintake`), on the one instance that holds the intake lease: the one
  MQTT session (a fixed client id) that subscribes to the command topics. It stores each command in
  the ``inbox`` table and acknowledges it to the broker (manual PUBACK) only once that committed;
  the next holder resumes the same persistent session, so what the broker held or had in flight for
  a holder that died is delivered to it. Measured with mosquitto 2.0.11
  (``bench/shared_subscriptions.py``): a shared subscription gives nothing a dead member held to the
  others (its persistent session keeps them, and keeps its turn; a clean one loses them);
- **inbox**: the owner of a partition takes its rows in order and hands each to its engine; the
  row is deleted in the same commit as what the engine stored for it (the command, a refusal), and
  its answers are published after that commit, so a command is taken in exactly once whoever dies
  when;
- **MQTT**: its own connection (client id ``<prefix>-<vendor>-<instance>``) for what its engines
  publish, through a guard that drops a message once its partition's lease is no longer valid
  locally; its availability ``bridge/{vendor}/instances/{instance}/state`` and its partitions;
  the extensions' topics (Home Assistant's status), since the extensions run on every instance
  over the devices it serves (polling, discovery) and the adapter's push intake (a push for a
  device served elsewhere goes to its owner through the store, twin.partitions).

The store's connection is the instance's proof of life (its member lock, :mod:`twin.leases`): when it
breaks (:class:`~twin.storeapi.StoreUnavailable`), others may take every partition at once, so the
instance ends them all and joins again as a new member once it can connect, with backoff. A server
that refuses for a while but keeps the connection (a full disk) is probed each second; the engines
keep what they decided meanwhile (twin.outage) and catch up once it writes.
"""

from __future__ import annotations

import logging
import random
import socket
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from anyio.abc import TaskGroup

from contracts.messages import InstancePartitions
from contracts.topics import Topics
from twin.adapter import Adapter, DeviceInfo, ReportedPatch
from twin.clusterintake import Inbox, Intake
from twin.config import BridgeOptions, ClusterSettings, MqttSettings, TlsSettingsError
from twin.confirmtiming import ConfirmTiming
from twin.engine import vendor_gate
from twin.extensions import BridgeContext, Connected, EventBus, Extension, Message, TwinChanged
from twin.homeassistant import HomeAssistantExtension, HomeAssistantSettings
from twin.jsonenc import dumps
from twin.leases import Lease, LeaseManager, new_owner
from twin.metrics import RECONNECTS, STORE_WRITABLE
from twin.mqtt import describe_error, disconnect_shielded, mqtt_client
from twin.partitions import ClusterFleet, ClusterSink, Partition, Partitions
from twin.pgdb import PgDatabase
from twin.pgschema import INTAKE, schema_for
from twin.polling import Poller
from twin.publisher import Publisher
from twin.runtime import OUTBOX_LIMIT, PUBLISH_WINDOW
from twin.storeapi import StoreUnavailable

__all__ = ["ClusterRuntime"]

log = logging.getLogger(__name__)

#: the longest wait between two attempts to join again after the store failed
REJOIN_MAX = 10.0


class ClusterRuntime:
    """Runs one adapter's instance until cancelled. Construct, then ``await run()``."""

    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        mqtt: MqttSettings,
        store_url: str,
        store_password: str | None,
        data_dir: Path,
        base_topic: str = "locktwin",
        options: BridgeOptions | None = None,
        cluster: ClusterSettings | None = None,
        homeassistant: HomeAssistantSettings | None = None,
    ) -> None:
        self.adapter = adapter
        self.mqtt = mqtt
        self.store_url = store_url
        self._store_password = store_password
        self.data_dir = data_dir / adapter.vendor
        self.topics = Topics(base=base_topic, vendor=adapter.vendor)
        self.options = options or BridgeOptions()
        self.cluster = cluster or ClusterSettings()
        self.instance = self.cluster.instance or socket.gethostname().split(".")[0][:64]
        prefix = "locktwin" if base_topic == "locktwin" else base_topic.replace("/", "-")
        self.client_id = f"{prefix}-{adapter.vendor}-{self.instance}"
        self.intake_client_id = f"{prefix}-{adapter.vendor}-intake"
        self.schema = schema_for(base_topic, adapter.vendor)
        # one gate and one confirmation timing for the instance's partitions, both in memory: a
        # shared store keeps neither (a budget is refused by build_runtime)
        self.gate = vendor_gate(adapter, self.options)
        self.timing = ConfirmTiming(prior=adapter.confirm_interval, longest=adapter.confirm_max_interval)
        self.publisher = Publisher(window=PUBLISH_WINDOW, limit=OUTBOX_LIMIT)
        self.bus = EventBus()
        self.devices: list[DeviceInfo] = []
        self.parts = Partitions(
            adapter=adapter,
            topics=self.topics,
            options=self.options,
            gate=self.gate,
            timing=self.timing,
            publisher=self.publisher,
            on_published=lambda device: self.bus.emit(TwinChanged(device)),
            on_ended=self._on_ended,
        )
        self.fleet = ClusterFleet(self.parts, lambda: self.devices)
        #: discovery of the devices this instance serves (each instance announces its own; the
        #: configs are retained and identical whoever announces them)
        self.homeassistant = homeassistant or HomeAssistantSettings()
        #: the exact topics the extensions read, on the instance's own connection
        self._routes: set[str] = set()
        self.ready = anyio.Event()
        self.connected = anyio.Event()
        self.db: PgDatabase | None = None
        self.leases: LeaseManager | None = None
        self.intake: Intake | None = None
        #: member runs started (1 at the first; each failure of the store's connection adds one)
        self.joins = 0
        self._tg: TaskGroup | None = None
        self._wake_leases = anyio.Event()

    @property
    def partitions(self) -> dict[int, Partition]:
        """The partitions served here now, by number."""
        return self.parts.served

    def serving(self, device: str) -> Partition | None:
        return self.parts.serving(device)

    # -- run -------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled; a store that fails as a whole (or does not answer yet) ends every
        partition, and the instance joins again as a new member once it can connect. A store
        whose schema does not fit this bridge (StoreError) ends the run."""
        async with AsyncExitStack() as stack:
            await self.adapter.start(ClusterSink(self.parts, self.data_dir))
            stack.push_async_callback(self.adapter.stop)
            self.devices = list(await self.adapter.list_devices())
            delay = 0.5
            while True:
                try:
                    await self._run_member()
                except StoreUnavailable as exc:
                    log.warning("%s; joining again in %.1fs", exc, delay)
                await anyio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, REJOIN_MAX)

    async def _run_member(self) -> None:
        owner = new_owner(self.instance)
        db = PgDatabase(
            conninfo=self.store_url,
            password=self._store_password,
            schema=self.schema,
            partitions=self.cluster.partitions,
            owner=owner,
        )
        db.writable_listeners.append(lambda writable: STORE_WRITABLE.labels(self.adapter.vendor).set(int(writable)))
        db.open()
        self.db = db
        self.joins += 1
        self.parts.use(db, self.devices)
        leases = self.leases = LeaseManager(
            db=db, vendor=self.adapter.vendor, name=self.instance, lease_seconds=self.cluster.lease_seconds
        )
        lost = anyio.Event()
        db.on_lost = lambda partition, why: self._on_lost(partition, why, lost)
        STORE_WRITABLE.labels(self.adapter.vendor).set(1)
        try:
            leases.join()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(db.writer.run)  # commits off the event loop (twin.pgwriter)
                extended = anyio.Event()
                tg.start_soon(self._mqtt_loop, extended)
                tg.start_soon(self._lease_loop, leases)
                tg.start_soon(Inbox(runtime=self, db=db).run)
                tg.start_soon(self._housekeeping, db)
                await self._start_extensions(tg)
                extended.set()
                self.ready.set()
                await lost.wait()
                tg.cancel_scope.cancel()
        finally:
            self.parts.drop_all()
            if db.is_open:
                leases.leave()
            db.close()
            self.db = None
            self.intake = None
            STORE_WRITABLE.labels(self.adapter.vendor).set(0)
        raise StoreUnavailable(f"the store {db.describe()}: its connection broke")

    async def _start_extensions(self, tg: TaskGroup) -> None:
        self.bus = EventBus()  # this member run's extensions only (those of an ended run are gone)
        extensions: list[Extension] = [Poller(), *self.adapter.extensions()]
        if self.homeassistant.enabled:
            extensions.append(HomeAssistantExtension(settings=self.homeassistant, topics=self.topics))
        self._routes = {topic for ext in extensions for topic in ext.topics}
        context = BridgeContext(
            vendor=self.adapter.vendor,
            topics=self.topics,
            options=self.options,
            store=_NoStore(),  # type: ignore[arg-type]
            fleet=self.fleet,
            gate=self.gate,
            bus=self.bus,
            sink=ClusterSink(self.parts, self.data_dir),
            read=self._read,
            publish_retained=lambda topic, payload: self.publisher.send(topic, payload, retain=True),
            task_group=tg,
        )
        for ext in extensions:
            await ext.start(context)

    async def _read(self, device: str) -> ReportedPatch | None:
        part = self.parts.serving(device)
        if part is None:
            return None
        return await part.engine.reads.read(device)

    def _on_lost(self, partition: int | None, why: str, whole: anyio.Event) -> None:
        if partition is None:
            whole.set()  # the connection: every partition ends now (others may take them at once)
            self.parts.drop_all()
            if self.intake is not None:
                self.intake.stop()
            return
        if self.leases is not None:
            self.leases.lose(partition, why)
        self._drop(partition)

    def _on_ended(self, partition: int) -> None:
        """A partition's engine ended by itself: its lease goes back (another instance may do better)."""
        if self.leases is not None and self.leases.valid(partition):
            self.leases.lose(partition, "its engine ended")
        self._wake_leases.set()

    # -- partitions ------------------------------------------------------------------------------
    async def _lease_loop(self, leases: LeaseManager) -> None:
        assert self._tg is not None
        while True:
            try:
                changes = leases.tick()
            except StoreUnavailable as exc:  # a broken connection ends this member run meanwhile
                log.warning("lease tick: %s", exc)
                await anyio.sleep(1.0)
                continue
            for partition in changes.lost:
                self._drop(partition)
            for lease in changes.acquired:
                if lease.partition == INTAKE:
                    self._start_intake(lease)
                else:
                    await self.parts.adopt(lease, self._tg)
            for partition in changes.release:
                part = self.parts.drop(partition)
                if part is not None:
                    await part.stopped.wait()
                    await leases.db.writer.idle(partition)  # its last writes stored under its lease
                leases.release(partition)
            if changes.lost or changes.acquired or changes.release:
                self._publish_partitions()
            with anyio.move_on_after(changes.next_tick):
                await self._wake_leases.wait()
            self._wake_leases = anyio.Event()

    def _drop(self, partition: int) -> None:
        if partition == INTAKE:
            if self.intake is not None:
                self.intake.stop()
            return
        self.parts.drop(partition)

    def _start_intake(self, lease: Lease) -> None:
        assert self.db is not None and self._tg is not None
        self.intake = Intake(runtime=self, db=self.db, lease=lease)
        self._tg.start_soon(self.intake.run)

    # -- MQTT ------------------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.bridge_instance(self.instance, "state"), b"offline", qos=1, retain=True)
        client = mqtt_client(self.mqtt, identifier=self.client_id, will=will, persistent_session=True)
        return self.publisher.prepare(client)

    async def _mqtt_loop(self, extended: anyio.Event) -> None:
        """The instance's own connection, once this member run's extensions are started (they hear
        of each connection, and their topics are subscribed here)."""
        await extended.wait()
        delay = 0.5
        while True:
            try:
                async with disconnect_shielded(self._client()) as client:
                    delay = 0.5
                    state = self.topics.bridge_instance(self.instance, "state")
                    await client.publish(state, b"online", qos=1, retain=True)
                    routes = set(self._routes)
                    if routes:
                        await client.subscribe([(t, 1) for t in sorted(routes)])
                    self.publisher.attach(client)
                    self._publish_partitions()
                    for part in list(self.parts.served.values()):
                        part.engine.out.republish_devices()
                    self.bus.emit(Connected())
                    self.connected.set()
                    try:
                        # only the extensions' topics: commands come through the intake
                        async for message in client.messages:
                            topic = message.topic.value
                            if topic in routes and isinstance(message.payload, bytes):
                                self.bus.emit(Message(topic, message.payload))
                    finally:
                        with anyio.move_on_after(2, shield=True):
                            await self.publisher.drained()
                            await client.publish(state, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TlsSettingsError) as exc:
                RECONNECTS.labels(self.adapter.vendor).inc()
                log.warning("%s; retrying in %.1fs", describe_error(exc, self.mqtt), delay)
            finally:
                self.publisher.detach()
                self.connected = anyio.Event()
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.mqtt.reconnect_max)

    def _publish_partitions(self) -> None:
        held = sorted(p for p in self.parts.served if self.leases is not None and self.leases.valid(p))
        doc = InstancePartitions(
            instance=self.instance,
            partitions=held,
            count=self.cluster.partitions,
            intake=self.leases is not None and self.leases.valid(INTAKE),
            since=datetime.now(UTC),
        )
        topic = self.topics.bridge_instance(self.instance, "partitions")
        self.publisher.send(topic, dumps(doc.model_dump(mode="json")), retain=True)

    async def _housekeeping(self, db: PgDatabase) -> None:
        while True:
            await anyio.sleep(1.0)
            if not db.writable and not db.probe():
                continue  # the engines wait for the store (twin.outage); the leases run out meanwhile
            try:
                db.flush()  # the answered marks are at most a second old when the process dies
            except StoreUnavailable:
                continue
            if self.intake is not None:
                self.intake.heartbeat()
            await anyio.to_thread.run_sync(db.vacuum_if_due)


class _NoStore:
    """Extensions of a cluster instance see no store of their own (retention runs on the intake's)."""
