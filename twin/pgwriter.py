"""Group commit for the PostgreSQL store: transactions committed off the event loop, many per round trip.

A synchronous commit holds the event loop for its round trip (0.3-0.9 ms on loopback here, more to a
managed server in another zone), and every partition of an instance shares that loop: measured on
``bench.failover``, the loop spent ~2.2 ms of every command waiting for psycopg, and the instance
ran at 0.57-0.65 of the SQLite bridge's throughput. So while an instance runs, :class:`GroupCommit`
takes each transaction the engines close (:meth:`PgDatabase._end`) into a queue, and one task sends
what is queued, all of it, as one PostgreSQL transaction over a connection of its own (psycopg's
async connection), one fence per partition in it: one round trip and one WAL flush for as many
engine transactions as arrived during the last one.

What holds as before: nothing is announced before its write is durable (a transaction's
after-commit callbacks run once its group committed; a message sent while a partition's write is
still queued waits for that write, :meth:`after_commit`); a transaction that is not stored runs its
rollback hooks, and so does every transaction queued after it that may have built on it. What an
engine did in the meantime without waiting is undone with it.

What is new, and where the engine waits: a transaction is durable when :meth:`settled` returns,
which raises what refused it (:class:`~twin.storeapi.LeaseLost`, :class:`~twin.storeapi.StoreUnavailable`).
The engine awaits it where a write must be durable before something outside the store happens: the
``sent`` step before the vendor call (a call is never made for a command a crash could run again),
the end of each command, the inbox before it takes rows again, the intake before it acknowledges
messages to the broker. Reads go to the database on the instance's other connection; the three a
command needs while its own writes may still be queued (a command by id or by transaction, a
refusal) see them first (:meth:`pending_command` and the others).

Failures. A group that fails as a whole on a broken connection or a refusal for now (a full disk,
a lock timeout) fails every transaction in it and in the queue (all undone, newest first). Any
other failure of a group of several transactions (a fence that refused one partition) sends them
again one by one, so that one partition's lost lease is not another's outage.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import psycopg

from twin.storeapi import CommandRecord, StoreUnavailable

if TYPE_CHECKING:
    from twin.pgdb import Fence, PgDatabase

__all__ = ["MAX_GROUP", "GroupCommit", "Txn", "announce", "compose", "undone"]

log = logging.getLogger(__name__)

#: engine transactions in one group at most (a group is one query: its size bounds its parse time)
MAX_GROUP = 256
#: failures remembered for :meth:`GroupCommit.settled` (failures are rare: an outage, a lost lease)
_FAILURES_KEPT = 4096
#: per task: (the writer, the first and the last ticket it queued since it last waited)
_UNSETTLED: contextvars.ContextVar[tuple[GroupCommit, int, int] | None] = contextvars.ContextVar(
    "locktwin_unsettled", default=None
)


@dataclass(eq=False)
class Txn:
    """One engine transaction, closed and waiting to be committed."""

    fence: Fence | None
    statements: list[tuple[str, tuple[Any, ...], Callable[[tuple[Any, ...]], None] | None]]
    after: list[Callable[[], None]]
    undo: list[Callable[[], None]]
    commands: list[CommandRecord] = field(default_factory=list)
    refusals: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    ticket: int = 0

    @property
    def partition(self) -> int | None:
        return None if self.fence is None else self.fence.partition


def compose(
    txns: list[Txn], marks: list[str]
) -> tuple[str, list[Any], list[tuple[int, Callable[[tuple[Any, ...]], None]]]]:
    """One query of every statement of ``txns`` (each opened by its fence) and the answered
    ``marks``; with the index of each statement whose first row a callback wants."""
    statements: list[str] = []
    params: list[Any] = []
    returning: list[tuple[int, Callable[[tuple[Any, ...]], None]]] = []
    for txn in txns:
        if txn.fence is not None:
            statements.append("SELECT fence(%s, %s, %s)")
            params += (txn.fence.partition, txn.fence.owner, txn.fence.epoch)
        for sql, args, returned in txn.statements:
            if returned is not None:
                returning.append((len(statements), returned))
            statements.append(sql)
            params += args
    if marks:
        statements.append("UPDATE commands SET answered = 1 WHERE id = ANY(%s)")
        params.append(marks)
    return ";\n".join(statements), params, returning


class GroupCommit:
    """The queue of closed transactions of one :class:`~twin.pgdb.PgDatabase`, and the task that
    commits them (:meth:`run`)."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        self.running = False
        self._queue: list[Txn] = []
        self._in_flight: list[Txn] = []
        self._tickets = 0
        #: every ticket up to this one is decided (committed or failed)
        self._done = 0
        self._failed: dict[int, Exception] = {}
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        #: queued or in-flight transactions by partition (None: unfenced)
        self._waiting: collections.Counter[int | None] = collections.Counter()
        #: while a committed transaction's callbacks run, what they send goes out at once
        self._deciding = False
        #: what queued transactions wrote, for the reads that must see it (newest ticket kept)
        self._commands: dict[str, tuple[CommandRecord, int]] = {}
        self._by_transaction: dict[tuple[str, str], str] = {}
        self._refusals: dict[tuple[str, str], tuple[str, dict[str, Any], int]] = {}
        #: groups committed, and engine transactions in them (``bench.failover`` reports the ratio)
        self.groups = 0
        self.committed = 0

    # -- queue -----------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self._queue or self._in_flight)

    def pending_of(self, partition: int | None) -> bool:
        """Whether a write of ``partition`` (of any when None) waits to be committed."""
        if self._deciding or not (self._queue or self._in_flight):
            return False
        return partition is None or self._waiting[partition] > 0

    def enqueue(self, txn: Txn) -> None:
        self._tickets += 1
        txn.ticket = self._tickets
        self._queue.append(txn)
        self._waiting[txn.partition] += 1
        for cmd in txn.commands:
            self._commands[cmd.id] = (cmd, txn.ticket)
            if cmd.transaction is not None:
                self._by_transaction[(cmd.device, cmd.transaction)] = cmd.id
        for device, transaction, fingerprint, error in txn.refusals:
            self._refusals[(device, transaction)] = (fingerprint, error, txn.ticket)
        mark = _UNSETTLED.get()
        first = mark[1] if mark is not None and mark[0] is self else txn.ticket
        _UNSETTLED.set((self, first, txn.ticket))
        self._wake.set()

    def after_commit(self, fn: Callable[[], None], partition: int | None) -> bool:
        """Hold ``fn`` (outside any transaction) until the last queued write of ``partition`` (of
        any partition when None) committed; dropped if that write is not stored. False when no
        such write waits (``fn`` may run now)."""
        if not self.pending_of(partition):
            return False
        for txn in reversed([*self._in_flight, *self._queue]):
            if partition is None or txn.partition == partition:
                txn.after.append(fn)
                return True
        return False

    # -- reads of what is queued -----------------------------------------------------------------
    def pending_command(self, command_id: str) -> CommandRecord | None:
        found = self._commands.get(command_id)
        return None if found is None else dataclasses.replace(found[0])

    def pending_by_transaction(self, device: str, transaction: str) -> CommandRecord | None:
        command_id = self._by_transaction.get((device, transaction))
        return None if command_id is None else self.pending_command(command_id)

    def pending_refusal(self, device: str, transaction: str, fingerprint: str) -> dict[str, Any] | None:
        found = self._refusals.get((device, transaction))
        return None if found is None or found[0] != fingerprint else dict(found[1])

    # -- waiting ---------------------------------------------------------------------------------
    async def settled(self) -> None:
        """Until every transaction this task queued is decided; raises what refused one of them."""
        mark = _UNSETTLED.get()
        if mark is None or mark[0] is not self:
            return
        _UNSETTLED.set(None)
        _, first, last = mark
        while self._done < last:
            if not self.running:
                raise StoreUnavailable(f"the store {self.db.describe()} is closed")
            await self._progress.wait()
        for ticket, exc in self._failed.items():
            if first <= ticket <= last:
                raise exc

    async def idle(self, partition: int) -> None:
        """Until no write of ``partition`` waits (before its lease is given up: what its engine
        decided is stored under it)."""
        while self.running and self.pending_of(partition):
            await self._progress.wait()

    # -- the committing task ---------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit what is queued until cancelled; what is still queued then is committed at once
        (synchronously, on the instance's connection) if that connection stands."""
        try:
            conn = await self.db.connect_async()
        except StoreUnavailable as exc:
            task_status.started()
            self.db.broken(str(exc))
            return
        self.running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                group = self._queue[:MAX_GROUP]
                del self._queue[: len(group)]
                self._in_flight = group
                # a group sent is seen through: its outcome decides its callbacks, whoever cancels
                with anyio.CancelScope(shield=True):
                    await self._commit(conn, group)
                self._in_flight = []
        finally:
            self.running = False
            with anyio.CancelScope(shield=True):
                await conn.close()
            self._drain_now()

    def _drain_now(self) -> None:
        left, self._queue = self._queue, []
        if left and self.db.is_open:
            try:
                rows = self.db.commit_sync(left)
            except (psycopg.Error, StoreUnavailable) as exc:  # at a stop: undone, nothing announced
                log.warning("the store could not take what was queued at a stop: %s", exc)
                self._fail(left, StoreUnavailable(str(exc)))
            else:
                self.decide(left, rows)
        elif left:
            self._fail(left, StoreUnavailable(f"the store {self.db.describe()} is closed"))
        self._progress.set()

    async def _commit(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], group: list[Txn]) -> None:
        marks = list(self.db.later_answered)
        try:
            rows = await self._execute(conn, group, marks)
        except Exception as exc:  # classified: a bug too ends as a broken connection
            if _broken(conn, exc) or len(group) == 1:
                self._refused(group, exc, conn)
            else:
                await self._one_by_one(conn, group)
            return
        del self.db.later_answered[: len(marks)]
        self.db.committed()
        self.decide(group, rows)

    async def _one_by_one(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], group: list[Txn]) -> None:
        failed: dict[int | None, Exception] = {}
        for index, txn in enumerate(group):
            if txn.partition in failed:  # it may have built on the one that failed
                self._fail([txn], failed[txn.partition])
                continue
            try:
                rows = await self._execute(conn, [txn], [])
            except Exception as exc:  # classified below
                classified = self.db.failure(exc, txn.partition, broken=_broken(conn, exc))
                if isinstance(classified, StoreUnavailable):  # the server refuses: so would the rest
                    self._fail(group[index:] + self._take_queue(), classified)
                    return
                failed[txn.partition] = classified
                self._fail([txn], classified)
                continue
            self.db.committed()
            self.decide([txn], rows)

    async def _execute(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], group: list[Txn], marks: list[str]
    ) -> list[tuple[int, tuple[Any, ...] | None]]:
        sql, params, returning = compose(group, marks)
        wanted = dict(returning)
        rows: list[tuple[int, tuple[Any, ...] | None]] = []
        if not sql:
            return rows  # a flush whose marks another group took
        # a server that stops answering mid-group (a network split) is a broken connection
        with anyio.fail_after(self.db.statement_timeout + 5.0):
            cur = psycopg.AsyncClientCursor(conn)
            await cur.execute(sql, params)
            index = 0
            while True:
                if index in wanted:
                    rows.append((index, await cur.fetchone()))
                index += 1
                if not cur.nextset():
                    break
        self.groups += 1
        self.committed += len(group)
        return rows

    def _take_queue(self) -> list[Txn]:
        left, self._queue = self._queue, []
        return left

    def _refused(self, group: list[Txn], exc: Exception, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        partition = group[0].partition if len(group) == 1 else None
        classified = self.db.failure(exc, partition, broken=_broken(conn, exc))
        if isinstance(classified, StoreUnavailable) or partition is None:
            self._fail(group + self._take_queue(), classified)
        else:
            self._fail(group, classified)

    # -- outcomes --------------------------------------------------------------------------------
    def decide(self, group: list[Txn], rows: list[tuple[int, tuple[Any, ...] | None]]) -> None:
        found = dict(rows)
        index = 0
        for txn in group:  # the rows by statement index, as compose() numbered them
            if txn.fence is not None:
                index += 1
            for _, _, returned in txn.statements:
                row = found.get(index)
                if returned is not None and row is not None:
                    try:
                        returned(row)
                    except Exception:  # a bug in one must not leave the group's outcome half told
                        log.exception("a row's callback failed")
                index += 1
        self._deciding = True
        try:
            for txn in group:
                self._forget(txn)
                self._done = max(self._done, txn.ticket)
                announce(txn.after)
        finally:
            self._deciding = False
        self._progress.set()
        self._progress = anyio.Event()

    def _fail(self, txns: list[Txn], exc: Exception) -> None:
        for txn in reversed(txns):  # newest first: each undoes what it changed on top of the older
            undone(txn.undo)
        for txn in txns:
            self._forget(txn)
            self._failed[txn.ticket] = exc
            self._done = max(self._done, txn.ticket)
        while len(self._failed) > _FAILURES_KEPT:
            del self._failed[next(iter(self._failed))]
        self._progress.set()
        self._progress = anyio.Event()

    def _forget(self, txn: Txn) -> None:
        if not txn.ticket:
            return  # committed when it closed: never queued
        self._waiting[txn.partition] -= 1
        for cmd in txn.commands:
            if self._commands.get(cmd.id, (None, 0))[1] == txn.ticket:
                del self._commands[cmd.id]
                if cmd.transaction is not None:
                    self._by_transaction.pop((cmd.device, cmd.transaction), None)
        for device, transaction, _, _ in txn.refusals:
            if self._refusals.get((device, transaction), ("", {}, 0))[2] == txn.ticket:
                del self._refusals[(device, transaction)]


def _broken(conn: psycopg.AsyncConnection[tuple[Any, ...]], exc: BaseException) -> bool:
    """Whether the connection can no longer be trusted: broken, closed, or its answer never came."""
    return isinstance(exc, TimeoutError | psycopg.InterfaceError) or conn.closed or conn.broken


def announce(fns: list[Callable[[], None]]) -> None:
    """Run each of ``fns``; one that fails is logged and the others still run."""
    for fn in fns:
        try:
            fn()
        except Exception:  # one failing publish must not keep the others back
            log.exception("after a commit")


def undone(undo: list[Callable[[], None]]) -> None:
    for fn in reversed(undo):
        try:
            fn()
        except Exception:  # one failing undo must not keep the others back
            log.exception("undoing after a rollback")
