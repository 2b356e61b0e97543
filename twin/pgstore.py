"""The PostgreSQL store's views: what one partition's engine, and the vendor's intake, see (issue 22).

Chosen by ``store = "postgresql://host/db"`` (the password from ``LOCKTWIN_STORE_PASSWORD`` or
``store_password_file``, never the TOML). :class:`~twin.pgdb.PgDatabase` is one instance's connection
to the vendor's schema (:mod:`twin.pgschema`); :class:`PartitionStore` is the
:class:`~twin.storeapi.TwinStore` of one partition, every write fenced by its lease, and
:class:`VendorStore` the vendor's own rows (meta of the whole bridge, retention), fenced by the
intake lease. The commit discipline (one query at the outermost commit, nothing published before
it, rollback hooks on a failure) is :mod:`twin.pgdb`'s, and the group commit off the event loop
:mod:`twin.pgwriter`'s.

A fence that refuses a commit raises :class:`~twin.storeapi.LeaseLost` (the partition's engine ends;
whoever holds the lease next serves it from the store); a connection that broke raises
:class:`~twin.storeapi.StoreUnavailable` and ends every partition of the instance, which joins again
on a new connection. In-memory state of a partition is a cache of the store that lives only as long
as its lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from contracts.messages import CommandStatus
from twin.jsonenc import dumps_text
from twin.pgdb import Fence, PgDatabase
from twin.pgschema import INTAKE, schema_for
from twin.storeapi import CommandRecord, TwinRecord

__all__ = ["PartitionStore", "VendorStore", "schema_for"]

_FINAL = tuple(s.value for s in CommandStatus if s.is_final)
_COLUMNS = (
    "id, seq, device, txn, kind, name, value, status, source, accepted_at, expires_at, updated_at, "
    "attempts, idempotent, sensitive, error, result, reply_topic, correlation, answered, acked_at, parent, fingerprint"
)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _record(row: tuple[Any, ...]) -> CommandRecord:
    return CommandRecord(
        id=row[0],
        seq=row[1],
        device=row[2],
        transaction=row[3],
        kind=row[4],
        name=row[5],
        value=_loads(row[6]),
        status=CommandStatus(row[7]),
        source=row[8],
        accepted_at=row[9],
        expires_at=row[10],
        updated_at=row[11],
        attempts=row[12],
        idempotent=bool(row[13]),
        sensitive=bool(row[14]),
        error=_loads(row[15]),
        result=_loads(row[16]),
        reply_topic=row[17],
        correlation=None if row[18] is None else bytes(row[18]),
        answered=bool(row[19]),
        acked_at=row[20],
        parent=row[21],
        fingerprint=row[22],
    )


class _View:
    """What both views share: transactions over :class:`PgDatabase` under one fence."""

    def __init__(self, db: PgDatabase, *, fence: Fence) -> None:
        self.db = db
        self._fence = fence
        self.writable_listeners: list[Callable[[bool], None]] = []
        db.writable_listeners.append(self._relay)

    def release(self) -> None:
        """This view's engine ended: the database no longer tells it anything."""
        if self._relay in self.db.writable_listeners:
            self.db.writable_listeners.remove(self._relay)

    def _relay(self, writable: bool) -> None:
        for listener in list(self.writable_listeners):
            listener(writable)

    def fence(self) -> Fence:
        return self._fence

    @property
    def unwritable(self) -> str | None:
        return self.db.unwritable

    @property
    def writable(self) -> bool:
        return self.db.writable

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction_of(self._fence.partition)

    def transaction(self) -> AbstractContextManager[None]:
        return self.db.transaction(self._fence)

    def _write(
        self, sql: str, params: tuple[Any, ...], *, returned: Callable[[tuple[Any, ...]], None] | None = None
    ) -> None:
        with self.transaction():  # fenced even when no transaction is open
            self.db.write(sql, params, returned=returned)

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.db.after_commit(fn, self._fence.partition)

    async def settled(self) -> None:
        await self.db.settled()

    def on_rollback(self, fn: Callable[[], None]) -> None:
        self.db.on_rollback(fn)

    def forget_old_copies(self) -> None:
        self.db.forget_old_copies()

    def flush(self) -> None:
        self.db.flush()

    def probe(self) -> bool:
        return self.db.probe()

    def meta(self, key: str) -> str | None:
        return self.db.read_meta(self._key(key))

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self._key(key), value),
        )

    def _key(self, key: str) -> str:
        return key

    def fingerprint(self, kind: str, name: str, value: Any) -> str:
        return self.db.fingerprint(kind, name, value)

    def mark_answered(self, command_id: str) -> None:
        self.db.mark_answered(command_id)

    def journal(
        self,
        *,
        entry: str,
        device: str | None,
        source: str,
        data: dict[str, Any],
        command_id: str | None = None,
        transaction: str | None = None,
    ) -> None:
        self._write(
            "INSERT INTO journal(at, device, txn, command_id, entry, source, data, instance, epoch) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                time.time(),
                device,
                transaction,
                command_id,
                entry,
                source,
                dumps_text(data),
                self.db.owner,
                self._fence.epoch,
            ),
        )

    def journal_entries(self, device: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, at, device, txn, command_id, entry, source, data FROM journal"
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = %s"
            params = (device,)
        with self.db.reading() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        keys = ("seq", "at", "device", "transaction", "command_id", "entry", "source", "data")
        return [{**dict(zip(keys, r, strict=True)), "data": _loads(r[7])} for r in rows]


class PartitionStore(_View):
    """The :class:`~twin.storeapi.TwinStore` of one partition, every write fenced by its lease."""

    def __init__(self, db: PgDatabase, *, partition: int, epoch: int) -> None:
        super().__init__(db, fence=Fence(partition, db.owner, epoch))
        self.partition = partition
        self.epoch = epoch
        #: whether the partition has refusals at all (None: not looked yet); only this view writes
        #: them while its lease holds, so one look is enough, and most partitions have none
        self._refusals: bool | None = None

    def _key(self, key: str) -> str:
        return f"{key}@{self.partition}"

    # -- twins -----------------------------------------------------------------------------------
    def load_twins(self) -> dict[str, TwinRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT device, version, desired, reported, metadata, command_id, present FROM twins "
                "WHERE partition = %s",
                (self.partition,),
            ).fetchall()
        return {
            r[0]: TwinRecord(
                device=r[0],
                version=r[1],
                desired=_loads(r[2]) or {},
                reported=_loads(r[3]) or {},
                metadata=_loads(r[4]) or {},
                command_id=r[5],
                present=bool(r[6]),
            )
            for r in rows
        }

    def save_twin(self, twin: TwinRecord) -> None:
        self._write(
            "INSERT INTO twins(device, partition, version, desired, reported, metadata, command_id, present) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device) DO UPDATE SET version = excluded.version, "
            "desired = excluded.desired, reported = excluded.reported, metadata = excluded.metadata, "
            "command_id = excluded.command_id, present = excluded.present",
            (
                twin.device,
                self.partition,
                twin.version,
                dumps_text(twin.desired),
                dumps_text(twin.reported),
                dumps_text(twin.metadata),
                twin.command_id,
                int(twin.present),
            ),
        )

    # -- commands --------------------------------------------------------------------------------
    def insert_command(self, cmd: CommandRecord) -> None:
        def numbered(row: tuple[Any, ...]) -> None:
            cmd.seq = int(row[0])

        with self.transaction():  # reads see it until its commit is decided
            self.db.remember_command(cmd)
            self._write(
                "INSERT INTO commands(id, partition, device, txn, kind, name, value, status, source, accepted_at, "
                "expires_at, updated_at, attempts, idempotent, sensitive, error, result, reply_topic, correlation, "
                "answered, acked_at, parent, fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (
                    cmd.id,
                    self.partition,
                    cmd.device,
                    cmd.transaction,
                    cmd.kind,
                    cmd.name,
                    dumps_text(cmd.value),
                    cmd.status.value,
                    cmd.source,
                    cmd.accepted_at,
                    cmd.expires_at,
                    cmd.updated_at,
                    cmd.attempts,
                    int(cmd.idempotent),
                    int(cmd.sensitive),
                    None if cmd.error is None else dumps_text(cmd.error),
                    None if cmd.result is None else dumps_text(cmd.result),
                    cmd.reply_topic,
                    cmd.correlation,
                    int(cmd.answered),
                    cmd.acked_at,
                    cmd.parent,
                    cmd.fingerprint,
                ),
                returned=numbered,
            )

    def update_command(self, cmd: CommandRecord) -> None:
        cmd.updated_at = time.time()
        with self.transaction():
            self.db.remember_command(cmd)
            self._write(
                "UPDATE commands SET value = %s, status = %s, updated_at = %s, attempts = %s, error = %s, "
                "result = %s, answered = %s, acked_at = %s WHERE id = %s",
                (
                    dumps_text(cmd.value),
                    cmd.status.value,
                    cmd.updated_at,
                    cmd.attempts,
                    None if cmd.error is None else dumps_text(cmd.error),
                    None if cmd.result is None else dumps_text(cmd.result),
                    int(cmd.answered),
                    cmd.acked_at,
                    cmd.id,
                ),
            )

    def _select(self, where: str, params: tuple[Any, ...]) -> list[CommandRecord]:
        with self.db.reading() as conn:
            sql = f"SELECT {_COLUMNS} FROM commands WHERE {where}"  # noqa: S608 - the columns and conditions are ours
            rows = conn.execute(sql, params).fetchall()
        return [_record(r) for r in rows]

    def command(self, command_id: str) -> CommandRecord | None:
        pending = self.db.writer.pending_command(command_id)  # written, its commit not decided yet
        if pending is not None:
            return pending
        found = self._select("id = %s", (command_id,))
        return found[0] if found else None

    def command_by_transaction(self, device: str, transaction: str) -> CommandRecord | None:
        pending = self.db.writer.pending_by_transaction(device, transaction)
        if pending is not None:
            return pending
        found = self._select("device = %s AND txn = %s", (device, transaction))
        return found[0] if found else None

    def open_commands(self, device: str | None = None) -> list[CommandRecord]:
        if device is None:
            return self._select("partition = %s AND status <> ALL(%s) ORDER BY seq", (self.partition, list(_FINAL)))
        return self._select("device = %s AND status <> ALL(%s) ORDER BY seq", (device, list(_FINAL)))

    def unanswered_finals(self) -> list[CommandRecord]:
        taken = set(self.db.later_answered)
        found = self._select(
            "partition = %s AND answered = 0 AND status = ANY(%s) ORDER BY seq", (self.partition, list(_FINAL))
        )
        return [c for c in found if c.id not in taken]

    def refuse(self, device: str, transaction: str, fingerprint: str, error: dict[str, Any]) -> None:
        with self.transaction():
            self._write(
                "INSERT INTO refusals(device, partition, txn, fingerprint, at, error) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (device, self.partition, transaction, fingerprint, time.time(), dumps_text(error)),
            )
            self.db.remember_refusal(device, transaction, fingerprint, error)
        self._refusals = True

    def refusal(self, device: str, transaction: str, fingerprint: str) -> dict[str, Any] | None:
        if self._refusals is None:
            with self.db.reading() as conn:
                row = conn.execute("SELECT EXISTS(SELECT 1 FROM refusals WHERE partition = %s)", (self.partition,))
                self._refusals = bool(row.fetchone()[0])  # type: ignore[index]
        if not self._refusals:
            return None  # no read on the command path of a partition that never refused
        pending = self.db.writer.pending_refusal(device, transaction, fingerprint)
        if pending is not None:
            return pending
        with self.db.reading() as conn:
            found = conn.execute(
                "SELECT error FROM refusals WHERE device = %s AND txn = %s AND fingerprint = %s",
                (device, transaction, fingerprint),
            ).fetchone()
        return None if found is None else dict(_loads(found[0]))

    def consume(self, seq: int) -> None:
        """The inbox row ``seq`` goes in the commit of what was stored for it (twin.clusterintake)."""
        self._write("DELETE FROM inbox WHERE seq = %s AND partition = %s", (seq, self.partition))

    def consume_forwarded(self, seq: int) -> None:
        """The forwarded push ``seq`` goes in the commit of what its observation changed."""
        self._write("DELETE FROM forwarded WHERE seq = %s AND partition = %s", (seq, self.partition))

    def prune_journal(self, *, before: float, limit: int) -> int:
        return 0  # the vendor's store prunes for every partition (VendorStore)

    def prune_commands(self, *, before: float, limit: int) -> int:
        return 0


class VendorStore(PartitionStore):
    """The vendor's own rows (meta of the whole bridge: the device list's pages, the intake session's
    ``live_at``), fenced by the intake lease, and the retention of the whole schema."""

    def __init__(self, db: PgDatabase, *, epoch: int) -> None:
        super().__init__(db, partition=INTAKE, epoch=epoch)

    def _key(self, key: str) -> str:
        return key

    def put_inbox(self, rows: list[tuple[Any, ...]]) -> None:
        """Commands taken from the intake session (one commit for a batch), fenced by the intake lease."""
        with self.transaction():
            for row in rows:
                self._write(
                    "INSERT INTO inbox(partition, topic, payload, retained, response_topic, correlation, "
                    "expiry_left, queued_since, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    row,
                )
            self._write("SELECT pg_notify(%s, '')", (f"{self.db.schema}_inbox",))

    def prune_journal(self, *, before: float, limit: int) -> int:
        with self.db.reading() as conn:
            oldest = conn.execute("SELECT at FROM journal ORDER BY seq LIMIT 1").fetchone()
            if oldest is None or oldest[0] >= before:
                return 0  # the usual case, and no write for it
            return conn.execute(
                "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal ORDER BY seq LIMIT %s) AND at < %s",
                (limit, before),
            ).rowcount

    def prune_commands(self, *, before: float, limit: int) -> int:
        with self.db.reading() as conn:
            oldest = conn.execute("SELECT accepted_at FROM commands ORDER BY seq LIMIT 1").fetchone()
            if oldest is None or oldest[0] >= before:
                return 0
            with conn.transaction():
                cur = conn.execute(
                    "DELETE FROM commands WHERE seq IN (SELECT seq FROM commands ORDER BY seq LIMIT %s) "
                    "AND accepted_at < %s AND status = ANY(%s) AND answered = 1",
                    (limit, before, list(_FINAL)),
                )
                conn.execute("DELETE FROM refusals WHERE at < %s", (before,))
        return cur.rowcount
