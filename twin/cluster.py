"""One instance of a bridge among several that share a PostgreSQL store (issue 22).

What an instance runs, in one task group:

- **leases** (:mod:`twin.leases`): a tick about once a second renews what it holds and takes what
  its quota wants; a partition it acquires gets an engine of its own (:class:`~twin.engine.TwinEngine`
  over a :class:`~twin.pgstore.PartitionStore`), started exactly as a bridge starts after a
  restart: twins loaded, open commands settled by the same rules (expired ones end expired or
  failed, a call that may have gone out is repeated only when idempotent), final answers not known
  delivered sent again. A partition lost or released ends its engine (its task group is cancelled);
  nothing of it stays in memory;
- **intake** (:mod:`twin.clusterintake`), on the one instance that holds the intake lease: the one
  MQTT session (a fixed client id) that subscribes to the command topics. It stores each command in
  the ``inbox`` table and acknowledges it to the broker (manual PUBACK) only once that committed;
  the next holder resumes the same persistent session, so what the broker held or had in flight for
  a holder that died is delivered to it. Measured with mosquitto 2.0.11
  (``bench/shared_subscriptions.py``): a shared subscription gives nothing a dead member held to the
  others (its persistent session keeps them, and keeps its turn; a clean one loses them);
- **inbox**: the owner of a partition takes its rows in order and hands each to its engine; the
  row is deleted in the same commit as what the engine stored for it (the command, a refusal), so a
  command is taken in exactly once whoever dies when;
- **MQTT**: its own connection (client id ``<prefix>-<vendor>-<instance>``) for what its engines
  publish, through a guard that drops a message once its partition's lease is no longer valid
  locally; its availability ``bridge/{vendor}/instances/{instance}/state`` and its partitions.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from anyio.abc import TaskGroup

from contracts.messages import EventType, InstancePartitions
from contracts.topics import Topics
from twin.adapter import Adapter, DeviceInfo, ReportedPatch
from twin.clusterintake import Inbox, Intake
from twin.config import BridgeOptions, ClusterSettings, MqttSettings, TlsSettingsError
from twin.engine import TwinEngine
from twin.extensions import BridgeContext, EventBus, Extension, TwinChanged
from twin.gate import VendorGate
from twin.jsonenc import dumps
from twin.leases import Lease, LeaseManager, new_owner
from twin.metrics import RECONNECTS
from twin.mqtt import describe_error, mqtt_client
from twin.pgschema import INTAKE, schema_for
from twin.pgstore import PartitionStore, PgDatabase
from twin.polling import Poller
from twin.publisher import Publisher
from twin.runtime import OUTBOX_LIMIT, PUBLISH_WINDOW, _disconnect_shielded
from twin.storeapi import LeaseLost, TwinRecord

__all__ = ["ClusterRuntime"]

log = logging.getLogger(__name__)


class _Guarded:
    """The publisher as one partition's engine sees it: nothing goes out once its lease is not valid."""

    def __init__(self, publisher: Publisher, valid: Callable[[], bool]) -> None:
        self._publisher = publisher
        self._valid = valid

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        correlation: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        if self._valid():
            self._publisher.send(
                topic, payload, retain=retain, correlation=correlation, on_sent=on_sent, guard=self._valid
            )

    def feed(self, steps: Any) -> None:
        self._publisher.feed(steps)

    @property
    def maximum_packet_size(self) -> int | None:
        return self._publisher.maximum_packet_size


class _Partition:
    def __init__(self, lease: Lease, engine: TwinEngine, store: PartitionStore) -> None:
        self.lease = lease
        self.engine = engine
        self.store = store
        self.scope = anyio.CancelScope()
        self.stopped = anyio.Event()


class _Fleet:
    """Every partition's engine as one read-only fleet (twin.extensions.FleetView)."""

    def __init__(self, runtime: ClusterRuntime) -> None:
        self._rt = runtime

    def devices(self) -> Sequence[DeviceInfo]:
        return self._rt.devices

    def info(self, device: str) -> DeviceInfo | None:
        part = self._rt.serving(device)
        return None if part is None else part.engine.fleet.info(device)

    def twin(self, device: str) -> TwinRecord | None:
        part = self._rt.serving(device)
        return None if part is None else part.engine.fleet.twin(device)

    def busy(self, device: str) -> bool:
        part = self._rt.serving(device)
        return part is None or part.engine.fleet.busy(device)

    def gone(self) -> Sequence[str]:
        return [d for part in list(self._rt.partitions.values()) for d in part.engine.fleet.gone()]


class _Sink:
    def __init__(self, runtime: ClusterRuntime, data_dir: Path) -> None:
        self._rt = runtime
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        part = self._rt.serving(device_id)
        if part is None:
            return False  # another instance serves it (and reads it itself)
        try:
            return await part.engine.report(device_id, patch, source=source)
        except LeaseLost:
            return False

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        part = self._rt.serving(device_id)
        if part is not None:
            with suppress(LeaseLost):
                await part.engine.event(device_id, type, data)


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
        self.gate = VendorGate(
            vendor=adapter.vendor,
            limit=self.options.max_in_flight or adapter.max_in_flight,
            call_timeout=self.options.call_timeout,
        )
        self.publisher = Publisher(window=PUBLISH_WINDOW, limit=OUTBOX_LIMIT)
        self.bus = EventBus()
        self.fleet = _Fleet(self)
        self.devices: list[DeviceInfo] = []
        self.by_partition: dict[int, list[DeviceInfo]] = {}
        self.partitions: dict[int, _Partition] = {}
        self.ready = anyio.Event()
        self.connected = anyio.Event()
        self.db: PgDatabase | None = None
        self.leases: LeaseManager | None = None
        self.intake: Intake | None = None
        self._tg: TaskGroup | None = None
        self._since = datetime.now(UTC)
        self._wake_leases = anyio.Event()

    def serving(self, device: str) -> _Partition | None:
        if self.db is None:
            return None
        part = self.partitions.get(self.db.partition_of(device))
        return part if part is not None and part.lease.valid() else None

    # -- run -------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled; a store that fails as a whole ends every partition, and the
        instance joins again as a new member once it can connect."""
        async with AsyncExitStack() as stack:
            await self.adapter.start(_Sink(self, self.data_dir))
            stack.push_async_callback(self.adapter.stop)
            self.devices = list(await self.adapter.list_devices())
            delay = 0.5
            while True:
                try:
                    await self._run_member()
                except LeaseLost as exc:
                    log.warning("the store failed (%s); joining again in %.1fs", exc, delay)
                await anyio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)

    async def _run_member(self) -> None:
        owner = new_owner(self.instance)
        db = PgDatabase(
            conninfo=self.store_url,
            password=self._store_password,
            schema=self.schema,
            partitions=self.cluster.partitions,
            owner=owner,
        )
        db.open()
        self.db = db
        self.by_partition = {}
        for info in self.devices:
            self.by_partition.setdefault(db.partition_of(info.id), []).append(info)
        leases = self.leases = LeaseManager(
            db=db, vendor=self.adapter.vendor, name=self.instance, lease_seconds=self.cluster.lease_seconds
        )
        lost = anyio.Event()
        db.on_lost = lambda partition, why: self._on_lost(partition, why, lost)
        leases.join()
        inbox = Inbox(runtime=self, db=db)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._mqtt_loop)
                tg.start_soon(self._lease_loop, leases)
                tg.start_soon(inbox.run)
                tg.start_soon(self._housekeeping, db)
                await self._start_extensions(tg)
                self.ready.set()
                await lost.wait()
                tg.cancel_scope.cancel()
        finally:
            for part in list(self.partitions.values()):
                part.scope.cancel()
            self.partitions.clear()
            if db.is_open:
                leases.leave()
            db.close()
            self.db = None
        raise LeaseLost(None, "the store's connection failed")

    async def _start_extensions(self, tg: TaskGroup) -> None:
        extensions: list[Extension] = [Poller(), *self.adapter.extensions()]
        context = BridgeContext(
            vendor=self.adapter.vendor,
            topics=self.topics,
            options=self.options,
            store=_NoStore(),  # type: ignore[arg-type]
            fleet=self.fleet,
            gate=self.gate,
            bus=self.bus,
            sink=_Sink(self, self.data_dir),
            read=self._read,
            publish_retained=lambda topic, payload: self.publisher.send(topic, payload, retain=True),
            task_group=tg,
        )
        for ext in extensions:
            await ext.start(context)

    async def _read(self, device: str) -> ReportedPatch | None:
        part = self.serving(device)
        if part is None:
            return None
        return await part.engine.reads.read(device)

    def _on_lost(self, partition: int | None, why: str, whole: anyio.Event) -> None:
        if partition is None:
            whole.set()
            return
        if self.leases is not None:
            self.leases._lose(partition, why)
        self._drop(partition)

    # -- partitions ------------------------------------------------------------------------------
    async def _lease_loop(self, leases: LeaseManager) -> None:
        while True:
            changes = leases.tick()
            for partition in changes.lost:
                self._drop(partition)
            for lease in changes.acquired:
                if lease.partition == INTAKE:
                    self._start_intake(lease)
                else:
                    await self._adopt(lease)
            for partition in changes.release:
                part = self.partitions.get(partition)
                if part is not None:
                    self._drop(partition)
                    await part.stopped.wait()
                leases.release(partition)
            if changes.lost or changes.acquired or changes.release:
                self._publish_partitions()
            with anyio.move_on_after(changes.next_tick):
                await self._wake_leases.wait()
            self._wake_leases = anyio.Event()

    async def _adopt(self, lease: Lease) -> None:
        assert self.db is not None and self._tg is not None
        partition = lease.partition
        store = PartitionStore(self.db, partition=partition, epoch=lease.epoch)

        def fence() -> None:
            if not lease.valid() or self.partitions.get(partition) is not part:
                raise LeaseLost(partition, "the lease is no longer valid here")

        engine = TwinEngine(
            adapter=self.adapter,
            store=store,
            topics=self.topics,
            options=self.options,
            gate=self.gate,
            fence=fence,
            on_published=lambda device: self.bus.emit(TwinChanged(device)),
        )
        engine.out.use(_Guarded(self.publisher, lease.valid))
        part = _Partition(lease, engine, store)
        await self._tg.start(self._serve, part)

    async def _serve(self, part: _Partition, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        partition = part.lease.partition
        started = False
        try:
            with part.scope:
                async with anyio.create_task_group() as tg:
                    await part.engine.start(tg, self.by_partition.get(partition, []))
                    # served (the inbox, pushes, reads) only once its twins and commands are loaded
                    self.partitions[partition] = part
                    if self.publisher.connected:
                        part.engine.out.republish_devices()
                    task_status.started()
                    started = True
                    await anyio.sleep_forever()
        except LeaseLost as exc:
            log.warning("partition %s ends: %s", partition, exc)
        except Exception:
            log.exception("the engine of partition %s failed", partition)
        finally:
            if self.partitions.get(partition) is part:
                del self.partitions[partition]
                if self.leases is not None and self.leases.valid(partition):
                    self.leases._lose(partition, "its engine ended")
                self._wake_leases.set()
            part.stopped.set()
            if not started:
                task_status.started()

    def _drop(self, partition: int) -> None:
        if partition == INTAKE:
            if self.intake is not None:
                self.intake.stop()
            return
        part = self.partitions.pop(partition, None)
        if part is not None:
            part.scope.cancel()

    # -- intake ----------------------------------------------------------------------------------
    def _start_intake(self, lease: Lease) -> None:
        assert self.db is not None and self._tg is not None
        self.intake = Intake(runtime=self, db=self.db, lease=lease)
        self._tg.start_soon(self.intake.run)

    # -- MQTT ------------------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.bridge_instance(self.instance, "state"), b"offline", qos=1, retain=True)
        client = mqtt_client(self.mqtt, identifier=self.client_id, will=will, persistent_session=True)
        return self.publisher.prepare(client)

    async def _mqtt_loop(self) -> None:
        delay = 0.5
        while True:
            try:
                async with _disconnect_shielded(self._client()) as client:
                    delay = 0.5
                    state = self.topics.bridge_instance(self.instance, "state")
                    await client.publish(state, b"online", qos=1, retain=True)
                    self.publisher.attach(client)
                    self._publish_partitions()
                    for part in list(self.partitions.values()):
                        part.engine.out.republish_devices()
                    self.connected.set()
                    try:
                        async for _ in client.messages:
                            pass  # it subscribes to nothing: commands come through the intake
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
        held = sorted(p for p in self.partitions if self.leases is not None and self.leases.valid(p))
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
            db.flush(None)  # the answered marks are at most a second old when the process dies
            if self.intake is not None:
                self.intake.heartbeat()


class _NoStore:
    """Extensions of a cluster instance see no store of their own (retention runs on the intake's)."""


Reader = Callable[[str], Awaitable[ReportedPatch | None]]
