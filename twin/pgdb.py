"""One instance's connection to a vendor's PostgreSQL schema, and its transactions (issue 22).

The engine calls the store synchronously (psycopg 3): a transaction's statements are collected
while the engine runs and sent when the outermost one closes, as one query: ``fence()`` first (the
partition's lease, :mod:`twin.pgschema`), the writes, the deferred answered marks. Several
statements in one query run as one implicit transaction, all or nothing, in one round trip (~0.3 ms
on loopback here with ``synchronous_commit`` on, against ~0.02 ms for SQLite). Nothing is sent
before, so no transaction of ours is ever open while the event loop does something else (a paused
process holds no lock), and the after-commit callbacks (the messages) run only once it committed;
on any failure the rollback hooks run instead (:meth:`PgDatabase.on_rollback`).

While an instance runs, :attr:`PgDatabase.writer` (:mod:`twin.pgwriter`) commits the closed
transactions off the event loop on a connection of its own, many per round trip; the engine awaits
:meth:`PgDatabase.settled` where a write must be durable first. Without it (tests of the store
alone, a stop) a transaction commits when it closes, on this connection, and raises what refused it.
Reads go straight to the database (autocommit) on this connection, which also holds the instance's
member lock (:mod:`twin.leases`); the reads a command makes see its queued writes first.

What a failure raises (the tree is :mod:`twin.storeapi`'s)::

    LeaseLost          the fence refused the commit: the partition's lease moved on (nothing stored)
    StoreUnavailable   the connection broke (also :attr:`PgDatabase.on_lost` with None: the
                       instance's member lock went with it, so others may take its partitions now),
                       or the server refused for now (a full disk, a lock or statement timeout,
                       too many connections): nothing of the transaction is kept in memory
    psycopg.Error      any other refusal of a statement (a bug), after the rollback hooks ran

A COMMIT whose answer the broken connection never brought may have committed; the instance then
serves its partitions again from the store (the restart rules), which is right either way.
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

from twin.pgschema import FENCE_SQLSTATE, schema_sql
from twin.pgwriter import GroupCommit, Txn, announce, compose, undone
from twin.shard import Shard
from twin.storeapi import CommandRecord, LeaseLost, StoreError, StoreUnavailable

__all__ = ["LOCK_TIMEOUT", "STATEMENT_TIMEOUT", "VACUUM_INTERVAL", "Fence", "PgDatabase", "connect"]

log = logging.getLogger(__name__)

#: seconds a statement may wait for a lock, and may run, before it fails as StoreUnavailable
LOCK_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 5.0
#: seconds between two VACUUMs of the commands table asked by :meth:`PgDatabase.forget_old_copies`
VACUUM_INTERVAL = 5.0
#: SQLSTATE classes of a server that cannot take a transaction now, though the connection stands:
#: insufficient resources (53: a full disk, out of memory, too many connections), lock or statement
#: timeouts (55P03, 57014), a transaction rolled back for a conflict (40)
_TRANSIENT = ("53", "40", "55P03", "57014")


@dataclass(frozen=True)
class Fence:
    """The lease a transaction writes under: the database refuses it once the lease moved on."""

    partition: int
    owner: str
    epoch: int


def connect(conninfo: str, password: str | None, *, application: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection; raises :class:`StoreUnavailable` (the server does not answer now)."""
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": application[:63]}
    if password is not None:
        kwargs["password"] = password
    try:
        return psycopg.connect(conninfo, connect_timeout=5, **kwargs)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"the store {describe(conninfo)}: {_first_line(exc)}") from None


def describe(conninfo: str) -> str:
    """The store's address without its password (for log lines)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql (an unreadable address)"
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class PgDatabase:
    """One instance's synchronous connection to a vendor's schema, and its transactions."""

    def __init__(
        self,
        *,
        conninfo: str,
        password: str | None,
        schema: str,
        partitions: int,
        owner: str,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.conninfo = conninfo
        self.lock_timeout = lock_timeout
        self.statement_timeout = STATEMENT_TIMEOUT
        self.password = password
        self.schema = schema
        self.partitions = partitions
        self.owner = owner
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._depth = 0
        self._fence: Fence | None = None
        self._batch: list[tuple[str, tuple[Any, ...], Callable[[tuple[Any, ...]], None] | None]] = []
        self._after: list[Callable[[], None]] = []
        self._undo: list[Callable[[], None]] = []
        self._commands: list[CommandRecord] = []
        self._refusals: list[tuple[str, str, str, dict[str, Any]]] = []
        #: commits off the event loop while its task runs (twin.pgwriter)
        self.writer = GroupCommit(self)
        #: answered marks not written yet: they join the next commit, whichever partition's it is
        self.later_answered: list[str] = []
        self._fingerprint_key = b""
        self._vacuum_due = False
        self._vacuumed_at = 0.0
        #: why the last write failed; None while writes succeed
        self.unwritable: str | None = None
        #: called with the new state when writes start failing or succeed again
        self.writable_listeners: list[Callable[[bool], None]] = []
        #: told when the connection broke (None) or a partition's fence refused a commit (its number)
        self.on_lost: Callable[[int | None, str], None] = lambda partition, why: None

    # -- lifecycle -------------------------------------------------------------------------------
    def describe(self) -> str:
        return describe(self.conninfo)

    def open(self) -> None:
        """Connect, create or check the schema, read the fingerprint key every instance shares.
        Raises :class:`StoreUnavailable` when the server does not answer, :class:`StoreError` when
        the schema does not fit this bridge."""
        conn = connect(self.conninfo, self.password, application=f"locktwin {self.owner}")
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
                for statement in schema_sql(self.schema, self.partitions):
                    conn.execute(statement)
                conn.execute(
                    f'INSERT INTO "{self.schema}".meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING',  # noqa: S608
                    ("fingerprint_key", secrets.token_hex(32)),
                )
            for statement in self._session_sql():
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
            key = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint_key'").fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(f"the store {self.describe()}: {_first_line(exc)}") from None
        if row is None or int(row[0]) != self.partitions:
            conn.close()
            raise StoreError(
                f"the store {self.describe()} (schema {self.schema}) has {row[0] if row else '?'} partitions, "
                f"this bridge is set to {self.partitions}: partitions cannot change once a store has data"
            )
        self._conn = conn
        self._fingerprint_key = bytes.fromhex(str(key[0]) if key else "")

    def _session_sql(self) -> list[str]:
        # The engines wait for every statement: one stuck behind a lock (a migration, a VACUUM
        # FULL) or a server too slow must fail (StoreUnavailable), not freeze the bridge.
        return [
            f'SET search_path TO "{self.schema}"',
            "SET idle_in_transaction_session_timeout = '30s'",
            f"SET lock_timeout = '{int(self.lock_timeout * 1000)}ms'",
            f"SET statement_timeout = '{int(self.statement_timeout * 1000)}ms'",
        ]

    async def connect_async(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """The writer's own connection (autocommit, the same session settings); raises
        :class:`StoreUnavailable` when the server does not answer."""
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": f"locktwin writer {self.owner}"[:63]}
        if self.password is not None:
            kwargs["password"] = self.password
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, connect_timeout=5, **kwargs)
            for statement in self._session_sql():
                await conn.execute(statement)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"the store {self.describe()}: {_first_line(exc)}") from None
        return conn

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            raise StoreUnavailable(f"the store {self.describe()} is not connected")
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def close(self) -> None:
        """Commit the deferred answered marks if it can (a clean stop sends no answer twice), close."""
        if self.is_open and not self._depth:
            try:
                self.flush()
            except (StoreUnavailable, LeaseLost, psycopg.Error) as exc:
                log.warning("the answered marks could not be stored at close: %s", exc)
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def partition_of(self, device: str) -> int:
        return Shard.slot(device, self.partitions)

    # -- writable or not -------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.unwritable is None

    def probe(self) -> bool:
        """Whether the server takes statements again after a transient refusal (a broken connection
        stays broken: the instance joins again on a new one)."""
        if self.writable:
            return True
        try:
            self.conn.execute("SELECT 1")
        except (psycopg.Error, StoreUnavailable):
            return False
        self._tell(None)
        return True

    def _tell(self, why: str | None) -> None:
        was, self.unwritable = self.unwritable, why
        if (was is None) == (why is None):
            return
        for listener in list(self.writable_listeners):
            try:
                listener(why is None)
            except Exception:  # one failing listener must not keep the others from hearing it
                log.exception("a listener of the store's state failed")

    def committed(self) -> None:
        self._tell(None)

    def broken(self, why: str) -> StoreUnavailable:
        """The instance's connections cannot be trusted: closed, told, every partition ends."""
        log.warning("the store %s failed: %s; every partition of this instance ends", self.describe(), why)
        self._disconnect()
        self._tell(f"the connection broke: {why}")
        self.on_lost(None, why)
        return StoreUnavailable(f"the store {self.describe()}: {why}")

    def failure(self, exc: BaseException, partition: int | None, *, broken: bool | None = None) -> Exception:
        """What ``exc`` (from a statement of ours) means, told to :attr:`on_lost` and the listeners;
        ``broken``: whether the connection it came from broke (this one's state when None)."""
        why = _first_line(exc)
        if isinstance(exc, StoreUnavailable):
            self._tell(why)
            return exc
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate == FENCE_SQLSTATE and partition is not None:
            self.on_lost(partition, why)
            return LeaseLost(partition, why)
        if broken is None:
            conn = self._conn
            broken = conn is None or conn.closed or conn.broken or isinstance(exc, psycopg.InterfaceError)
        # no SQLSTATE: the client lost the server; 08: a connection exception; 57P: the server ends it
        if broken or not sqlstate or sqlstate.startswith(("08", "57P")):
            return self.broken(why)
        if sqlstate.startswith(_TRANSIENT):
            self._tell(why)
            return StoreUnavailable(f"the store {self.describe()}: {why}")
        return exc if isinstance(exc, Exception) else RuntimeError(why)

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A read outside any transaction (autocommit); a failure is a :class:`StoreUnavailable`."""
        try:
            yield self.conn
        except (psycopg.Error, StoreUnavailable) as exc:
            raise self.failure(exc, None) from exc

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
        """Whether a write is open or not committed yet (a message sent now waits for it)."""
        return self._depth > 0 or self.writer.pending_of(None)

    def in_transaction_of(self, partition: int) -> bool:
        """Whether a write is open, or one of ``partition`` is not committed yet."""
        return self._depth > 0 or self.writer.pending_of(partition)

    async def settled(self) -> None:
        """Until every transaction the calling task closed is committed; raises what refused one
        (:class:`LeaseLost`, :class:`StoreUnavailable`). At once while no writer runs."""
        await self.writer.settled()

    def remember_command(self, cmd: CommandRecord) -> None:
        """``cmd`` is written by the open transaction: reads see it until that commit is decided."""
        if self._depth:
            self._commands.append(cmd)

    def remember_refusal(self, device: str, transaction: str, fingerprint: str, error: dict[str, Any]) -> None:
        if self._depth:
            self._refusals.append((device, transaction, fingerprint, error))

    def _begin(self, fence: Fence | None) -> None:
        if self._depth == 0:
            self._fence = fence
            self._batch = []
        elif fence is not None and self._fence is not None and fence != self._fence:
            raise RuntimeError("a transaction of one partition cannot join one of another")
        elif fence is not None:
            self._fence = fence  # an unfenced outer block (a flush) takes its first writer's fence
        self._depth += 1

    def write(
        self, sql: str, params: tuple[Any, ...], *, returned: Callable[[tuple[Any, ...]], None] | None = None
    ) -> None:
        """A statement of the open transaction (or one of its own, outside any); ``returned`` gets
        the first row it returns once it committed."""
        if self._depth == 0:
            with self.transaction(None):
                self.write(sql, params, returned=returned)
            return
        self._batch.append((sql, params, returned))

    def after_commit(self, fn: Callable[[], None], partition: int | None = None) -> None:
        """Run ``fn`` once the open transaction committed; outside one, once the last queued write
        of ``partition`` (any partition's when None) did, or now when none waits."""
        if self._depth:
            self._after.append(fn)
        elif not self.writer.after_commit(fn, partition):
            fn()

    def on_rollback(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` if the outermost transaction open now is not stored (it undoes what the caller
        changed in memory); forgotten once it commits."""
        if self._depth:
            self._undo.append(fn)

    def mark_answered(self, command_id: str) -> None:
        self.later_answered.append(command_id)

    def flush(self) -> None:
        """Commit the deferred answered marks now (with the writer: soon), unfenced (a mark only
        says the broker has an answer)."""
        if self.later_answered and self.is_open and not self.writer.pending:
            if self.writer.running:
                self.writer.enqueue(Txn(fence=None, statements=[], after=[], undo=[]))
            else:
                with self.transaction(None):
                    pass

    def _end(self, *, ok: bool) -> None:
        self._depth -= 1
        if self._depth:
            return
        txn = Txn(fence=self._fence, statements=self._batch, after=self._after, undo=self._undo)
        txn.commands, txn.refusals = self._commands, self._refusals
        self._batch, self._after, self._undo, self._commands, self._refusals = [], [], [], [], []
        self._fence = None
        if not ok:
            undone(txn.undo)  # nothing was sent: nothing to roll back but what the callers changed
            return
        if not txn.statements and (self.writer.running or not self.later_answered):
            partition = None if txn.fence is None else txn.fence.partition
            # nothing to write: what it announces follows what is queued of its partition, or goes now
            announce([fn for fn in txn.after if not self.writer.after_commit(fn, partition)])
            return
        if self.writer.running:
            self.writer.enqueue(txn)
            return
        try:
            rows = self.commit_sync([txn])
        except (psycopg.Error, StoreUnavailable) as exc:
            undone(txn.undo)
            raise self.failure(exc, None if txn.fence is None else txn.fence.partition) from exc
        self.writer.decide([txn], rows)

    def commit_sync(self, txns: list[Txn]) -> list[tuple[int, tuple[Any, ...] | None]]:
        """Commit ``txns`` and the answered marks now, on this connection, as one transaction: the
        rows their callbacks want, by statement index. Raises what the server (or the connection)
        did, for the caller to undo and classify."""
        marks = list(self.later_answered)
        sql, params, returning = compose(txns, marks)
        wanted = dict(returning)
        rows: list[tuple[int, tuple[Any, ...] | None]] = []
        if not sql:
            return rows
        # One query of several statements: one round trip, and one implicit transaction (all or
        # nothing). Bound on the client: measured ~50 us of CPU a commit against ~230 us for the
        # same statements in pipeline mode, and 0.31 ms against 0.51 ms a commit in all.
        cur = psycopg.ClientCursor(self.conn)
        cur.execute(sql, params)
        index = 0
        while True:
            if index in wanted:
                rows.append((index, cur.fetchone()))
            index += 1
            if not cur.nextset():
                break
        del self.later_answered[: len(marks)]
        self._tell(None)
        return rows

    # -- shared pieces ---------------------------------------------------------------------------
    def read_meta(self, key: str) -> str | None:
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def fingerprint(self, kind: str, name: str, value: Any) -> str:
        canonical = json.dumps([kind, name, value], sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._fingerprint_key, canonical.encode(), hashlib.sha256).hexdigest()[:32]

    def forget_old_copies(self) -> None:
        """A value that must not be kept (a full card id, a key) was overwritten: its old row version
        stays in the table's pages until a VACUUM prunes them, which :meth:`vacuum_if_due` runs
        within :data:`VACUUM_INTERVAL`. Measured on PostgreSQL 15: an id updated away was still in the
        relation file after the UPDATE and a CHECKPOINT, and gone after ``VACUUM commands``. A
        VACUUM cannot prune what a transaction older than the update may still see, and WAL
        segments (and any archive of them) keep theirs until they are recycled and overwritten."""
        self._vacuum_due = True

    def vacuum_if_due(self) -> None:
        """VACUUM the commands table on a connection of its own (run it in a worker thread)."""
        if not self._vacuum_due or time.monotonic() - self._vacuumed_at < VACUUM_INTERVAL:
            return
        self._vacuum_due = False
        self._vacuumed_at = time.monotonic()
        try:
            with connect(self.conninfo, self.password, application=f"locktwin vacuum {self.owner}") as conn:
                conn.execute(f'VACUUM "{self.schema}".commands')
        except (psycopg.Error, StoreUnavailable) as exc:
            self._vacuum_due = True  # the next round tries again
            log.warning("VACUUM of the commands table failed: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
