"""The PostgreSQL store: one vendor's twins shared by several bridge instances (issue 22).

Chosen by ``store = "postgresql://host/db"`` (the password from ``LOCKTWIN_STORE_PASSWORD`` or
``store_password_file``, never the TOML). :class:`PgDatabase` is one instance's connection to the
vendor's schema (:mod:`twin.pgschema`); :class:`PartitionStore` is the :class:`~twin.storeapi.TwinStore`
of one partition (what one partition's engine sees) and :class:`VendorStore` the vendor's own meta.

The engine calls the store synchronously and relies on its commit discipline, so this store is
synchronous too (psycopg 3, measured in the commit that added it: a write transaction in pipeline
mode is one round trip, ~0.3-0.4 ms on loopback with ``synchronous_commit`` on, against ~0.02 ms
for SQLite). A transaction's statements are collected while the engine runs and sent at the
outermost commit in one pipeline: ``fence()`` first (the partition's lease, :mod:`twin.pgschema`),
the writes, the deferred answered marks, COMMIT. Nothing is sent before, so no transaction of ours
is ever open while the event loop does something else (a paused process holds no lock), and the
after-commit callbacks (the messages) run only once COMMIT returned. Reads go straight to the
database (autocommit): no read in the engine depends on a write of its own open transaction.

Any failure of the database (the lease fenced us out, the connection broke, a statement failed)
raises :class:`~twin.storeapi.LeaseLost` after telling :attr:`PgDatabase.on_lost`: the instance drops
the partitions concerned (all of them when the connection broke) and serves them again, from the
store, once it holds their leases anew. In-memory state of a partition is a cache of the store that
lives only as long as its lease.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from contracts.messages import CommandStatus
from twin.jsonenc import dumps_text
from twin.pgschema import FENCE_SQLSTATE, INTAKE, schema_for, schema_sql
from twin.shard import Shard
from twin.storeapi import CommandRecord, LeaseLost, StoreError, TwinRecord

__all__ = ["Fence", "PartitionStore", "PgDatabase", "VendorStore", "schema_for"]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Fence:
    """The lease a transaction writes under: the database refuses it once the lease moved on."""

    partition: int
    owner: str
    epoch: int


class PgDatabase:
    """One instance's synchronous connection to a vendor's schema, and its transactions."""

    def __init__(self, *, conninfo: str, password: str | None, schema: str, partitions: int, owner: str) -> None:
        self.conninfo = conninfo
        self._password = password
        self.schema = schema
        self.partitions = partitions
        self.owner = owner
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._depth = 0
        self._fence: Fence | None = None
        self._batch: list[tuple[str, tuple[Any, ...], CommandRecord | None]] = []
        self._after: list[Callable[[], None]] = []
        self._later_answered: list[str] = []
        #: the inbox row being handled: the next transaction (or :meth:`consumed`) deletes it
        self.consuming: int | None = None
        self._fingerprint_key = b""
        #: told the partition whose lease failed a write (None: the connection itself failed)
        self.on_lost: Callable[[int | None, str], None] = lambda partition, why: None

    # -- lifecycle -------------------------------------------------------------------------------
    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": f"locktwin {self.owner}"[:63]}
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            return psycopg.connect(self.conninfo, connect_timeout=5, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"the store {self.describe()}: {_first_line(exc)}") from None

    def describe(self) -> str:
        """The store's address without its password (for log lines)."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        except psycopg.ProgrammingError:
            return "postgresql (an unreadable address)"
        return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def open(self) -> None:
        """Connect, create or check the schema, read the fingerprint key every instance shares."""
        conn = self.connect()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
                for statement in schema_sql(self.schema, self.partitions):
                    conn.execute(statement)
                conn.execute(
                    f'INSERT INTO "{self.schema}".meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING',  # noqa: S608
                    ("fingerprint_key", secrets.token_hex(32)),
                )
            conn.execute(f'SET search_path TO "{self.schema}"')
            conn.execute("SET idle_in_transaction_session_timeout = '30s'")
            row = conn.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"the store {self.describe()}: {_first_line(exc)}") from None
        if row is None or int(row[0]) != self.partitions:
            conn.close()
            raise StoreError(
                f"the store {self.describe()} (schema {self.schema}) has {row[0] if row else '?'} partitions, "
                f"this bridge is set to {self.partitions}: partitions cannot change once a store has data"
            )
        self._conn = conn
        self._fingerprint_key = bytes.fromhex(self.read_meta("fingerprint_key") or "")

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None:
            raise LeaseLost(None, "the store is not connected")
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def partition_of(self, device: str) -> int:
        return Shard.slot(device, self.partitions)

    # -- failures --------------------------------------------------------------------------------
    def _lost(self, exc: BaseException, partition: int | None) -> LeaseLost:
        fenced = isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) == FENCE_SQLSTATE
        why = _first_line(exc)
        if not fenced:
            partition = None  # the connection, not one lease: every partition of this instance goes
            log.warning("the store %s failed: %s; dropping every partition", self.describe(), why)
            if self._conn is not None and self._conn.closed:
                self._conn = None
        self.on_lost(partition, why)
        return LeaseLost(partition, why)

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A read outside any transaction (autocommit); a failure is a :class:`LeaseLost` of all."""
        try:
            yield self.conn
        except psycopg.Error as exc:
            raise self._lost(exc, None) from exc

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self, fence: Fence | None) -> Iterator[None]:
        self._begin(fence)
        try:
            yield
        except BaseException:
            self._end(ok=False)
            raise
        self._end(ok=True)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _begin(self, fence: Fence | None) -> None:
        if self._depth == 0:
            self._fence = fence
            self._batch = []
        elif fence is not None and self._fence is not None and fence != self._fence:
            raise RuntimeError("a transaction of one partition cannot join one of another")
        self._depth += 1

    def write(self, sql: str, params: tuple[Any, ...], *, returning: CommandRecord | None = None) -> None:
        """A statement of the open transaction (or one of its own, outside any)."""
        if self._depth == 0:
            with self.transaction(None):
                self.write(sql, params, returning=returning)
            return
        self._batch.append((sql, params, returning))

    def after_commit(self, fn: Callable[[], None]) -> None:
        if self._depth:
            self._after.append(fn)
        else:
            fn()

    def mark_answered(self, command_id: str) -> None:
        self._later_answered.append(command_id)

    def flush(self, fence: Fence | None) -> None:
        if self._later_answered:
            with self.transaction(fence):
                pass

    def _end(self, *, ok: bool) -> None:
        self._depth -= 1
        if self._depth:
            return
        batch, self._batch = self._batch, []
        after, self._after = self._after, []
        fence, self._fence = self._fence, None
        if not ok:
            return  # nothing was sent: nothing to roll back; the messages held are dropped
        marks = list(self._later_answered)
        consuming, self.consuming = self.consuming, None
        if not batch and not marks and consuming is None:
            for fn in after:
                _run(fn)
            return
        conn = self.conn
        try:
            with conn.pipeline(), conn.transaction():
                if fence is not None:
                    conn.execute("SELECT fence(%s, %s, %s)", (fence.partition, fence.owner, fence.epoch))
                cursors = [(conn.execute(sql, params), cmd) for sql, params, cmd in batch]
                if marks:
                    conn.execute("UPDATE commands SET answered = 1 WHERE id = ANY(%s)", (marks,))
                if consuming is not None:
                    conn.execute("DELETE FROM inbox WHERE seq = %s", (consuming,))
        except psycopg.Error as exc:
            self.consuming = consuming if self.consuming is None else self.consuming
            raise self._lost(exc, None if fence is None else fence.partition) from exc
        del self._later_answered[: len(marks)]
        for cur, cmd in cursors:
            if cmd is not None:
                row = cur.fetchone()
                if row is not None:
                    cmd.seq = int(row[0])
        for fn in after:
            _run(fn)

    # -- shared pieces ---------------------------------------------------------------------------
    def read_meta(self, key: str) -> str | None:
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def fingerprint(self, kind: str, name: str, value: Any) -> str:
        canonical = json.dumps([kind, name, value], sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._fingerprint_key, canonical.encode(), hashlib.sha256).hexdigest()[:32]

    def put_inbox(self, rows: list[tuple[Any, ...]], fence: Fence) -> None:
        """Commands taken from the intake session (one commit for a batch), fenced by the intake lease."""
        with self.transaction(fence):
            for row in rows:
                self.write(
                    "INSERT INTO inbox(partition, topic, payload, retained, response_topic, correlation, "
                    "expiry_left, queued_since, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    row,
                )
            self.write("SELECT pg_notify(%s, '')", (f"{self.schema}_inbox",))

    def take_inbox(self, partitions: list[int], limit: int) -> list[tuple[Any, ...]]:
        with self.reading() as conn:
            return conn.execute(
                "SELECT seq, partition, topic, payload, retained, response_topic, correlation, expiry_left, "
                "queued_since, received_at FROM inbox WHERE partition = ANY(%s) ORDER BY seq LIMIT %s",
                (partitions, limit),
            ).fetchall()


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # one failing publish must not keep the others back
        log.exception("after a commit")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _View:
    """What both views share: transactions over :class:`PgDatabase` under one fence."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.unwritable: str | None = None
        self.writable_listeners: list[Callable[[bool], None]] = []

    def fence(self) -> Fence | None:
        return None

    @property
    def writable(self) -> bool:
        return True

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def transaction(self) -> Any:
        return self.db.transaction(self.fence())

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.db.after_commit(fn)

    def flush(self) -> None:
        self.db.flush(self.fence())

    def probe(self) -> bool:
        return self.db.is_open

    def meta(self, key: str) -> str | None:
        return self.db.read_meta(self._key(key))

    def set_meta(self, key: str, value: str) -> None:
        self.db.write(
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
        fence = self.fence()
        self.db.write(
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
                None if fence is None else fence.epoch,
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
        super().__init__(db)
        self.partition = partition
        self.epoch = epoch
        self._fence = Fence(partition, db.owner, epoch)

    def fence(self) -> Fence:
        return self._fence

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
        self.db.write(
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
        self.db.write(
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
            returning=cmd,
        )

    def update_command(self, cmd: CommandRecord) -> None:
        cmd.updated_at = time.time()
        self.db.write(
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
        found = self._select("id = %s", (command_id,))
        return found[0] if found else None

    def command_by_transaction(self, device: str, transaction: str) -> CommandRecord | None:
        found = self._select("device = %s AND txn = %s", (device, transaction))
        return found[0] if found else None

    def open_commands(self, device: str | None = None) -> list[CommandRecord]:
        if device is None:
            return self._select("partition = %s AND status <> ALL(%s) ORDER BY seq", (self.partition, list(_FINAL)))
        return self._select("device = %s AND status <> ALL(%s) ORDER BY seq", (device, list(_FINAL)))

    def unanswered_finals(self) -> list[CommandRecord]:
        taken = set(self.db._later_answered)
        found = self._select(
            "partition = %s AND answered = 0 AND status = ANY(%s) ORDER BY seq", (self.partition, list(_FINAL))
        )
        return [c for c in found if c.id not in taken]

    def refuse(self, device: str, transaction: str, fingerprint: str, error: dict[str, Any]) -> None:
        self.db.write(
            "INSERT INTO refusals(device, txn, fingerprint, at, error) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (device, transaction, fingerprint, time.time(), dumps_text(error)),
        )

    def refusal(self, device: str, transaction: str, fingerprint: str) -> dict[str, Any] | None:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT error FROM refusals WHERE device = %s AND txn = %s AND fingerprint = %s",
                (device, transaction, fingerprint),
            ).fetchone()
        return None if row is None else dict(_loads(row[0]))

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

    def prune_journal(self, *, before: float, limit: int) -> int:
        with self.db.reading() as conn:
            return conn.execute(
                "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal ORDER BY seq LIMIT %s) AND at < %s",
                (limit, before),
            ).rowcount

    def prune_commands(self, *, before: float, limit: int) -> int:
        with self.db.reading() as conn:
            cur = conn.execute(
                "DELETE FROM commands WHERE seq IN (SELECT seq FROM commands ORDER BY seq LIMIT %s) "
                "AND accepted_at < %s AND status = ANY(%s) AND answered = 1",
                (limit, before, list(_FINAL)),
            )
            conn.execute("DELETE FROM refusals WHERE at < %s", (before,))
        return cur.rowcount
