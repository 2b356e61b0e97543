"""The partitions one instance serves on a shared PostgreSQL store, each with its own engine (issue 22).

A partition whose lease the instance acquired gets a :class:`~twin.engine.TwinEngine` over a
:class:`~twin.pgstore.PartitionStore`, started exactly as a bridge starts after a restart: twins
loaded, open commands settled by the same rules (expired ones end expired or failed, a call that
may have gone out is repeated only when idempotent), final answers not known delivered sent again.
It is served (the inbox, pushes, reads) only once that is done. A partition lost or released ends
its engine (its cancel scope); nothing of it stays in memory.

What goes out of an engine passes :class:`GuardedTransport`, which drops a message once its
partition's lease is no longer valid locally (the next holder publishes from the store), and what
the adapter and the extensions see of the instance is :class:`ClusterSink` and :class:`ClusterFleet`:
a device another instance serves is none of theirs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from contracts.messages import EventType
from contracts.topics import Topics
from twin.adapter import Adapter, DeviceInfo, ReportedPatch
from twin.config import BridgeOptions
from twin.confirmtiming import ConfirmTiming
from twin.engine import TwinEngine
from twin.gate import VendorGate
from twin.jsonenc import dumps_text
from twin.leases import Lease
from twin.metrics import PUSHES_FORWARDED
from twin.pgdb import PgDatabase
from twin.pgstore import PartitionStore
from twin.publisher import Publisher
from twin.storeapi import LeaseLost, StoreUnavailable, TwinRecord

__all__ = ["ClusterFleet", "ClusterSink", "GuardedTransport", "Partition", "Partitions", "forwarded_patch"]

log = logging.getLogger(__name__)


class GuardedTransport:
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


class Partition:
    def __init__(self, lease: Lease, engine: TwinEngine, store: PartitionStore) -> None:
        self.lease = lease
        self.engine = engine
        self.store = store
        self.scope = anyio.CancelScope()
        self.stopped = anyio.Event()


class Partitions:
    """The partitions served here: adopted from a lease, looked up by device, dropped."""

    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        topics: Topics,
        options: BridgeOptions,
        gate: VendorGate,
        timing: ConfirmTiming,
        publisher: Publisher,
        on_published: Callable[[str], None],
        on_ended: Callable[[int], None],
    ) -> None:
        self.adapter = adapter
        self.topics = topics
        self.options = options
        self.gate = gate
        self.timing = timing
        self.publisher = publisher
        self._on_published = on_published
        #: told the partition whose engine ended by itself (a failure, a fence), not by :meth:`drop`
        self._on_ended = on_ended
        self.served: dict[int, Partition] = {}
        self.db: PgDatabase | None = None
        self.devices: dict[int, list[DeviceInfo]] = {}
        self._known: frozenset[str] = frozenset()

    def use(self, db: PgDatabase, devices: Sequence[DeviceInfo]) -> None:
        """A new member run: its database, and the adapter's devices by partition."""
        self.db = db
        self.devices = {}
        for info in devices:
            self.devices.setdefault(db.partition_of(info.id), []).append(info)
        self._known = frozenset(info.id for info in devices)

    async def forward(self, device: str, kind: str, body: str, source: str) -> bool:
        """A push for a device not served here (another instance serves it, or none does right
        now): stored in ``forwarded`` for its partition's owner (twin.clusterintake.Inbox), and
        durable before this returns, so the vendor is answered 200 only for what is kept. False for
        a device the vendor did not list; StoreUnavailable when it could not be stored (the vendor
        sends it again)."""
        db = self.db
        if db is None:
            raise StoreUnavailable("this instance is joining the store again")
        if device not in self._known:
            return False
        with db.transaction(None):  # unfenced: any instance may hand a push on, none owns the row yet
            db.write(
                "INSERT INTO forwarded(partition, device, kind, body, source, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (db.partition_of(device), device, kind, body, source, time.time()),
            )
            db.write("SELECT pg_notify(%s, '')", (f"{db.schema}_inbox",))
        await db.settled()
        PUSHES_FORWARDED.labels(self.adapter.vendor, "sent").inc()
        return True

    def serving(self, device: str) -> Partition | None:
        if self.db is None:
            return None
        part = self.served.get(self.db.partition_of(device))
        return part if part is not None and part.lease.valid() else None

    async def adopt(self, lease: Lease, tg: TaskGroup) -> None:
        """Start the partition's engine under ``lease``; returns once it is served (or failed)."""
        assert self.db is not None
        partition = lease.partition
        store = PartitionStore(self.db, partition=partition, epoch=lease.epoch)

        def fence() -> None:
            if not lease.valid() or self.served.get(partition) is not part:
                raise LeaseLost(partition, "the lease is no longer valid here")

        engine = TwinEngine(
            adapter=self.adapter,
            store=store,
            topics=self.topics,
            options=self.options,
            gate=self.gate,
            timing=self.timing,
            fence=fence,
            on_published=self._on_published,
        )
        engine.out.use(GuardedTransport(self.publisher, lease.valid))
        part = Partition(lease, engine, store)
        await tg.start(self._serve, part)

    async def _serve(self, part: Partition, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        partition = part.lease.partition
        started = failed = False
        try:
            with part.scope:
                async with anyio.create_task_group() as tg:
                    await part.engine.start(tg, self.devices.get(partition, []))
                    # served (the inbox, pushes, reads) only once its twins and commands are loaded
                    self.served[partition] = part
                    if self.publisher.connected:
                        part.engine.out.republish_devices()
                    task_status.started()
                    started = True
                    await anyio.sleep_forever()
        except (LeaseLost, StoreUnavailable) as exc:
            failed = True
            log.warning("partition %s ends: %s", partition, exc)
        except Exception:
            failed = True
            log.exception("the engine of partition %s failed", partition)
        finally:
            part.store.release()
            if self.served.get(partition) is part:
                del self.served[partition]
                if failed:  # not a stop: its lease goes back
                    self._on_ended(partition)
            part.stopped.set()
            if not started:
                task_status.started()

    def drop(self, partition: int) -> Partition | None:
        """End the partition's engine now (its lease is lost, released or no longer valid)."""
        part = self.served.pop(partition, None)
        if part is not None:
            part.scope.cancel()
        return part

    def drop_all(self) -> None:
        for partition in list(self.served):
            self.drop(partition)


class ClusterFleet:
    """Every served partition's engine as one read-only fleet (twin.extensions.FleetView)."""

    def __init__(self, partitions: Partitions, devices: Callable[[], Sequence[DeviceInfo]]) -> None:
        self._parts = partitions
        self._devices = devices

    def devices(self) -> Sequence[DeviceInfo]:
        return self._devices()

    def info(self, device: str) -> DeviceInfo | None:
        part = self._parts.serving(device)
        return None if part is None else part.engine.fleet.info(device)

    def twin(self, device: str) -> TwinRecord | None:
        part = self._parts.serving(device)
        return None if part is None else part.engine.fleet.twin(device)

    def busy(self, device: str) -> bool:
        part = self._parts.serving(device)
        return part is None or part.engine.fleet.busy(device)

    def gone(self) -> Sequence[str]:
        return [d for part in list(self._parts.served.values()) for d in part.engine.fleet.gone()]

    def last_observed(self, device: str) -> float | None:
        part = self._parts.serving(device)
        return None if part is None else part.engine.fleet.last_observed(device)


class ClusterSink:
    """What the adapter sees of the instance (the BridgeSink protocol): reports and events of the
    devices it serves go to their engines; those of a device served elsewhere (a webhook behind a
    load balancer reaches any instance) are handed on through the store to its owner
    (:meth:`Partitions.forward`). A store that cannot write raises StoreUnavailable to the caller,
    as the lone bridge's sink does (a push is refused, to come again)."""

    def __init__(self, partitions: Partitions, data_dir: Path) -> None:
        self._parts = partitions
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        part = self._parts.serving(device_id)
        if part is not None:
            try:
                return await part.engine.report(device_id, patch, source=source)
            except LeaseLost:
                pass  # nothing of it was stored: its next owner gets it
        return await self._parts.forward(device_id, "report", forwarded_patch(patch, self._parts.adapter), source)

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        part = self._parts.serving(device_id)
        if part is not None:
            try:
                await part.engine.event(device_id, type, data)
                return
            except LeaseLost:
                pass
        await self._parts.forward(device_id, "event", dumps_text({"type": type.value, "data": data}), "vendor")


def forwarded_patch(patch: ReportedPatch, adapter: Adapter[Any]) -> str:
    """A patch as its owner applies it: dated when it arrived here if the vendor did not date it
    (an observation is no newer than its receipt, and the owner takes it later), and without the
    adapter's secret fields (the owner would drop them; the table must never hold them)."""
    secret = adapter.secret_fields
    kept = ReportedPatch(
        values={k: v for k, v in patch.values.items() if k not in secret},
        observed_at=patch.observed_at or datetime.now(UTC),
        field_observed_at={k: t for k, t in patch.field_observed_at.items() if k not in secret},
    )
    return kept.model_dump_json()
