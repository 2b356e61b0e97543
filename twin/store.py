"""The twin store: one SQLite file per adapter.

Tables:
- ``twins``: one row per device (version, desired, reported, metadata, last command, hold);
- ``commands``: every accepted command with its lifecycle, reply address and final answer;
- ``journal``: append-only audit of requests, vendor calls, outcomes and state changes;
- ``refusals``: commands refused because they were too old when they arrived (a copy sent again
  gets the same answer);
- ``meta``: schema version, page counts, when the bridge was last live (twin.session), the budget
  ledger (twin.ledger);
- ``ledger_devices``: requests spent per device this period, and devices whose vendor quota is
  spent (twin.ledger);
- ``timings``: how long after the vendor's acknowledgement each device (and the vendor) could be
  confirmed (twin.confirmtiming).

sqlite-utils creates and migrates the schema (and its CLI is how operators inspect a store); the
hot path uses prepared statements on the same connection, because sqlite-utils' row helpers are
5-8x slower (see platform-notes). Calls are synchronous on the event loop thread: with WAL and
``synchronous=NORMAL`` a commit is tens of microseconds, cheaper than a thread hop, and a process
crash loses nothing committed. ``synchronous=FULL`` (configurable) also survives power loss.

Commits are what costs (tens of microseconds each, most of the store's time on the command path).
:meth:`transaction` nests, an inner one joining the outermost (an observation and the outcome it
decides are one commit), and :meth:`after_commit` holds what must not be seen before the data is
durable (the outbound messages) until the outermost commit. The one write nothing waits for, the
mark that a final answer reached the broker, is deferred: it joins the next commit, or
:meth:`flush` within a second; a crash before then sends that final answer again, identically.

What is not cheap is SQLite's automatic checkpoint: every ~1,000 WAL pages the committing call
copies them into the database file, a stall of several milliseconds on the event loop (it set the
bridge's p99 latency). A long-running owner calls :meth:`checkpoint_elsewhere` and then runs
:meth:`checkpoint` from a worker thread (on its own connection) every second.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from contracts.messages import CommandStatus
from twin.files import private_file
from twin.jsonenc import dumps_text
from twin.storeapi import CommandRecord, StoreError, StoreUnavailable, TwinRecord, TwinStore

__all__ = ["WAL_LIMIT", "CommandRecord", "Store", "StoreError", "StoreUnavailable", "TwinRecord", "TwinStore"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: bytes of write-ahead log past which the next checkpoint restarts it (see Store.checkpoint) ...
WAL_LIMIT = 8 * 1024 * 1024
#: ... and commits in a checkpoint's interval (a second) at most for the bridge to count as quiet,
#: when a WAL file grown past it is truncated (the heartbeat of live_at commits once a second)
QUIET_COMMITS = 10


_COMMAND_COLUMNS = (
    "id, seq, device, txn, kind, name, value, status, source, accepted_at, expires_at, updated_at, "
    "attempts, idempotent, sensitive, error, result, reply_topic, correlation, answered, acked_at, parent, fingerprint"
)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


#: SQLite's words for "the file cannot take writes now", as opposed to a bug in a statement
_UNWRITABLE = ("full", "disk i/o", "readonly", "read-only", "locked", "unable to open", "no such file")


def _unwritable(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc).lower() for w in _UNWRITABLE)


def _zero_what_is_freed(conn: sqlite3.Connection) -> None:
    """Space a row leaves (an update that shrinks it, a delete, overflow pages freed) is zeroed in the
    database file instead of keeping the old bytes. Debian's SQLite does this by default, others do
    not: measured with it off, a command whose 60 card ids were replaced by their redacted form left
    101 copies of an id in freed pages of the file, for good."""
    conn.execute("PRAGMA secure_delete=ON")


class Store:
    """Durable twins, commands and journal of one adapter."""

    def __init__(self, *, path: Path, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._depth = 0
        self._after: list[Callable[[], None]] = []
        self._undo: list[Callable[[], None]] = []
        #: answered marks not written yet (see the module doc)
        self._later_answered: list[str] = []
        #: writes that join the next commit (or :meth:`flush`), by key: the latest of a key wins
        self._deferred: dict[str, Callable[[sqlite3.Connection], None]] = {}
        self._fingerprint_key = b""
        #: whether the refusals table has any row (it rarely has: most commands are never looked up)
        self._refusals = False
        #: why the last write failed; None while writes succeed (see :attr:`writable`)
        self.unwritable: str | None = None
        #: called with the new state when writes start failing or succeed again
        self.writable_listeners: list[Callable[[bool], None]] = []

        #: the next checkpoint truncates the WAL (see :meth:`forget_old_copies`)
        self._truncate_wal = False
        #: commits made, and as many as the last checkpoint had seen (it runs in a worker thread: it
        #: only reads the first)
        self._commits = 0
        self._commits_seen = 0
        self._page_size = 4096

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the store, check it and bring its schema up to date; raises
        :class:`StoreError` naming the file and what is wrong when it cannot be used."""
        try:
            conn = sqlite3.connect(private_file(self.path), isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot be opened ({_reason(exc)})") from None
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            _zero_what_is_freed(conn)
            checked = conn.execute("PRAGMA quick_check(1)").fetchone()
            if checked is None or checked[0] != "ok":
                raise StoreError(f"{self.path}: the database is damaged ({checked[0] if checked else 'no answer'})")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._conn = conn
            self._migrate(sqlite_utils.Database(conn))
        except sqlite3.Error as exc:
            conn.close()
            self._conn = None
            raise StoreError(f"{self.path}: {_reason(exc)}") from None
        except StoreError:
            conn.close()
            raise

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def writable(self) -> bool:
        return self.unwritable is None

    def probe(self) -> bool:
        """Try one small write (while writes fail, the owner calls this now and then); True: it took."""
        try:
            with self.transaction():
                self.set_meta("probe_at", repr(time.time()))
        except StoreUnavailable:
            return False
        return True

    def _undone(self) -> None:
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            try:
                fn()
            except Exception:  # one failing undo must not keep the others back
                log.exception("undoing after a rollback")

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        reason = _reason(exc)
        if self.unwritable is None:
            log.error("the store %s cannot write: %s", self.path, reason)
            self.unwritable = reason
            self._tell(writable=False)
        return StoreUnavailable(f"{self.path}: {reason}")

    def _succeeded(self) -> None:
        if self.unwritable is not None:
            log.warning("the store %s writes again (it could not: %s)", self.path, self.unwritable)
            self.unwritable = None
            self._tell(writable=True)

    def _tell(self, *, writable: bool) -> None:
        for listener in self.writable_listeners:
            try:
                listener(writable)
            except Exception:  # one failing listener must not keep the others from hearing it
                log.exception("a listener of the store's state failed")

    def checkpoint_elsewhere(self) -> None:
        """The owner runs :meth:`checkpoint` itself: commits never stop to copy the WAL."""
        self.conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file, on a connection of its own so that it
        can run in a worker thread (one call at a time), and keep the WAL within ``WAL_LIMIT``.
        After :meth:`forget_old_copies`, the WAL is truncated too."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute("PRAGMA busy_timeout=5000")
            self._page_size = self._checkpointer.execute("PRAGMA page_size").fetchone()[0]
        forget, self._truncate_wal = self._truncate_wal, False
        commits, self._commits_seen = self._commits - self._commits_seen, self._commits
        # The copy first, without holding writers up; then, only when needed, the reset of the log.
        # A WAL is reset only when a checkpoint catches up with its writer, which a steady burst of
        # commits never lets a PASSIVE one do: a burst of 5,000 /set on one device left a 290 MB WAL
        # (55 KiB a command). Past WAL_LIMIT the log is restarted: the next commits write over it
        # from its start. Truncating it instead under load made them append to a new file (a COMMIT
        # 43 us against 36 us, bench.latency); it is truncated once the bridge is quiet, so a burst
        # leaves no large file behind, and at once after forget_old_copies.
        _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        size = 0
        with contextlib.suppress(OSError):
            size = wal.stat().st_size
        quiet = commits <= QUIET_COMMITS
        if forget or (size > WAL_LIMIT and quiet):
            mode = "TRUNCATE"
        elif max(0, frames) * self._page_size > WAL_LIMIT:
            mode = "RESTART"
        else:
            return
        busy = self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
        if forget and busy:
            self._truncate_wal = True  # a reader was in the way: the next round tries again

    def forget_old_copies(self) -> None:
        """A value that must not be kept (a full card id, a key) was overwritten: the next
        :meth:`checkpoint` truncates the WAL, whose old page images still hold it (a WAL is reused,
        not shrunk, so they would stay until overwritten by chance; measured: a cards command left
        its id in 3 frames of a 1.9 MB WAL for as long as the bridge ran). Truncating on every
        checkpoint instead (or ``journal_size_limit=0``) made every commit append to the file:
        ~40 % slower commits here. The database file keeps no copy either: the checkpoint writes
        the page over, and what is freed is zeroed (``secure_delete``)."""
        self._truncate_wal = True

    def close(self) -> None:
        if self._conn is not None:
            self.flush()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def _migrate(self, db: sqlite_utils.Database) -> None:
        db["twins"].create(  # type: ignore[union-attr]
            {
                "device": str,
                "version": int,
                "desired": str,
                "reported": str,
                "metadata": str,
                "command_id": str,
                "present": int,
            },
            pk="device",
            if_not_exists=True,
        )
        db["commands"].create(  # type: ignore[union-attr]
            {
                "id": str,
                "seq": int,
                "device": str,
                "txn": str,
                "kind": str,
                "name": str,
                "value": str,
                "status": str,
                "source": str,
                "accepted_at": float,
                "expires_at": float,
                "updated_at": float,
                "attempts": int,
                "idempotent": int,
                "sensitive": int,
                "error": str,
                "result": str,
                "reply_topic": str,
                "correlation": bytes,
                "answered": int,
                "acked_at": float,
                "parent": str,
            },
            pk="id",
            if_not_exists=True,
        )
        db["journal"].create(  # type: ignore[union-attr]
            {
                "seq": int,
                "at": float,
                "device": str,
                "txn": str,
                "command_id": str,
                "entry": str,
                "source": str,
                "data": str,
            },
            pk="seq",
            if_not_exists=True,
        )
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)  # type: ignore[union-attr]
        # commands refused as expired by when they arrived, so that a copy of the same command that
        # arrives later (a client re-sending it) gets the same answer instead of running
        db["refusals"].create(  # type: ignore[union-attr]
            {"device": str, "txn": str, "fingerprint": str, "at": float, "error": str},
            pk=("device", "txn"),
            if_not_exists=True,
        )
        db["ledger_devices"].create(  # type: ignore[union-attr]
            {"device": str, "start": float, "spent": int, "vendor_until": float}, pk="device", if_not_exists=True
        )
        db["timings"].create(  # type: ignore[union-attr]
            {"key": str, "wait": float, "miss": float, "streak": int, "samples": int}, pk="key", if_not_exists=True
        )
        self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS commands_txn ON commands(device, txn)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS commands_device ON commands(device, status)")
        self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS commands_seq ON commands(seq)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS commands_unanswered ON commands(answered)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS journal_device ON journal(device, seq)")
        if "fingerprint" not in db["commands"].columns_dict:  # schema 1 -> 2
            db["commands"].add_column("fingerprint", str)  # type: ignore[union-attr]
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(SCHEMA_VERSION),),
        )
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('fingerprint_key', ?)", (secrets.token_hex(32),)
        )
        self._fingerprint_key = bytes.fromhex(self.meta("fingerprint_key") or "")
        self._refusals = self.conn.execute("SELECT 1 FROM refusals LIMIT 1").fetchone() is not None

    # -- transactions --------------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        """``with store.transaction():`` groups writes into one atomic commit; nested, it joins the
        outermost one. Deferred answered marks go into the commit too."""
        return _Transaction(self)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once what was written so far is durable: now, or after the outermost commit
        (never, if that transaction rolls back)."""
        if self._depth:
            self._after.append(fn)
        else:
            fn()

    async def settled(self) -> None:
        """Every commit of this store is durable when its block closes: nothing to wait for."""

    def on_rollback(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` if the outermost transaction open now rolls back (it undoes what the caller
        changed in memory for the writes that are lost); forgotten once it commits."""
        if self._depth:
            self._undo.append(fn)

    def flush(self) -> None:
        """Commit the deferred marks now (the owner calls this every second, and :meth:`close` does)."""
        if self._later_answered or self._deferred:
            with self.transaction():
                pass

    def defer(self, key: str, write: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``write`` in the next commit (or :meth:`flush`): for what may be a second late (a
        counter), at no commit of its own. A later ``write`` of the same key replaces this one."""
        self._deferred[key] = write

    def _begin(self) -> None:
        if self._depth == 0:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _unwritable(exc):
                    raise self._failed(exc) from exc
                raise
        self._depth += 1

    def _end(self, ok: bool, exc: BaseException | None = None) -> None:
        self._depth -= 1
        if self._depth:
            if not ok and exc is not None and _unwritable(exc):
                # said at once, at every level: the callers in between restore what they changed on
                # StoreUnavailable; the outermost rolls back
                raise self._failed(exc) from exc
            return
        if not ok:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")  # deferred marks stay deferred; messages held are dropped
            self._after.clear()
            self._undone()
            if exc is not None and _unwritable(exc):
                raise self._failed(exc) from exc
            return
        after, self._after = self._after, []
        deferred, self._deferred = self._deferred, {}
        try:
            for write in deferred.values():
                write(self.conn)
            if self._later_answered:
                self.conn.executemany(
                    "UPDATE commands SET answered=1 WHERE id=?", [(command_id,) for command_id in self._later_answered]
                )
            self.conn.execute("COMMIT")
        except sqlite3.Error as failure:
            self._deferred = {**deferred, **self._deferred}  # written with the next commit instead
            if self.conn.in_transaction:  # a failed COMMIT (a full disk) may leave it open
                self.conn.execute("ROLLBACK")
            self._undone()
            if _unwritable(failure):
                raise self._failed(failure) from failure
            raise
        self._later_answered.clear()
        self._undo.clear()
        self._commits += 1
        self._succeeded()
        for fn in after:
            try:
                fn()
            except Exception:  # one failing publish must not keep the others back
                log.exception("after a commit")

    # -- meta ----------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def fingerprint(self, kind: str, name: str, value: Any) -> str:
        """What a command asks for, to tell a replay (the same command again) from a transaction
        reused for another one. Keyed with this store's own random key, so that the fingerprint of a
        sensitive argument (a key, a card number) cannot be found by trying values without the store."""
        canonical = json.dumps([kind, name, value], sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._fingerprint_key, canonical.encode(), hashlib.sha256).hexdigest()[:32]

    # -- twins ---------------------------------------------------------------------------------
    def load_twins(self) -> dict[str, TwinRecord]:
        rows = self.conn.execute("SELECT device, version, desired, reported, metadata, command_id, present FROM twins")
        return {
            row[0]: TwinRecord(
                device=row[0],
                version=row[1],
                desired=_loads(row[2]) or {},
                reported=_loads(row[3]) or {},
                metadata=_loads(row[4]) or {},
                command_id=row[5],
                present=bool(row[6]),
            )
            for row in rows
        }

    def save_twin(self, twin: TwinRecord) -> None:
        self.conn.execute(
            "INSERT INTO twins(device, version, desired, reported, metadata, command_id, present) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device) DO UPDATE SET version=excluded.version, "
            "desired=excluded.desired, reported=excluded.reported, metadata=excluded.metadata, "
            "command_id=excluded.command_id, present=excluded.present",
            (
                twin.device,
                twin.version,
                dumps_text(twin.desired),
                dumps_text(twin.reported),
                dumps_text(twin.metadata),
                twin.command_id,
                int(twin.present),
            ),
        )

    # -- commands ------------------------------------------------------------------------------
    def insert_command(self, cmd: CommandRecord) -> None:
        cur = self.conn.execute(
            "INSERT INTO commands(id, seq, device, txn, kind, name, value, status, source, accepted_at, "
            "expires_at, updated_at, attempts, idempotent, sensitive, error, result, reply_topic, "
            "correlation, answered, acked_at, parent, fingerprint) VALUES (?, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM commands), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                cmd.id,
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
        )
        cmd.seq = int(cur.fetchone()[0])  # acceptance order (MAX over the seq index is a lookup)

    def update_command(self, cmd: CommandRecord) -> None:
        cmd.updated_at = time.time()
        self.conn.execute(
            "UPDATE commands SET value=?, status=?, updated_at=?, attempts=?, error=?, result=?, "
            "answered=?, acked_at=? WHERE id=?",
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

    def mark_answered(self, command_id: str) -> None:
        """The final answer reached the broker (deferred: a crash before the next commit repeats it)."""
        self._later_answered.append(command_id)

    def _select(self, where: str, params: tuple[Any, ...]) -> Iterator[CommandRecord]:
        for row in self.conn.execute(f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE {where}", params):  # noqa: S608
            yield CommandRecord(
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
                correlation=row[18],
                answered=bool(row[19]),
                acked_at=row[20],
                parent=row[21],
                fingerprint=row[22],
            )

    def command(self, command_id: str) -> CommandRecord | None:
        return next(self._select("id=?", (command_id,)), None)

    def command_by_transaction(self, device: str, transaction: str) -> CommandRecord | None:
        return next(self._select("device=? AND txn=?", (device, transaction)), None)

    def open_commands(self, device: str | None = None) -> list[CommandRecord]:
        final = tuple(s.value for s in CommandStatus if s.is_final)
        marks = ",".join("?" * len(final))
        if device is None:
            return list(self._select(f"status NOT IN ({marks}) ORDER BY seq", final))
        return list(self._select(f"device=? AND status NOT IN ({marks}) ORDER BY seq", (device, *final)))

    def unanswered_finals(self) -> list[CommandRecord]:
        final = tuple(s.value for s in CommandStatus if s.is_final)
        marks = ",".join("?" * len(final))
        taken = set(self._later_answered)  # the broker has them; only the mark is not written yet
        return [c for c in self._select(f"answered=0 AND status IN ({marks}) ORDER BY seq", final) if c.id not in taken]

    def refuse(self, device: str, transaction: str, fingerprint: str, error: dict[str, Any]) -> None:
        """Remember that this command was refused for its age (:meth:`refusal` answers copies of it)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO refusals(device, txn, fingerprint, at, error) VALUES (?, ?, ?, ?, ?)",
            (device, transaction, fingerprint, time.time(), dumps_text(error)),
        )
        self._refusals = True

    def refusal(self, device: str, transaction: str, fingerprint: str) -> dict[str, Any] | None:
        if not self._refusals:
            return None
        row = self.conn.execute(
            "SELECT error FROM refusals WHERE device=? AND txn=? AND fingerprint=?", (device, transaction, fingerprint)
        ).fetchone()
        return None if row is None else dict(_loads(row[0]))

    # -- ledger and timings ------------------------------------------------------------------
    def ledger_devices(self) -> list[tuple[str, float, int, float]]:
        """(device, period start, requests spent, vendor quota spent until) of every device kept."""
        rows = self.conn.execute("SELECT device, start, spent, vendor_until FROM ledger_devices")
        return [(str(r[0]), float(r[1]), int(r[2]), float(r[3] or 0.0)) for r in rows]

    def timings(self) -> list[tuple[str, float, float, int, int]]:
        """(key, wait, miss, streak, samples) of every confirmation timing kept (twin.confirmtiming)."""
        rows = self.conn.execute("SELECT key, wait, miss, streak, samples FROM timings")
        return [(str(r[0]), float(r[1]), float(r[2]), int(r[3]), int(r[4])) for r in rows]

    def confirmation_history(self, limit: int = 200) -> list[tuple[str, float]]:
        """(device, seconds from acknowledgement to success) of the latest succeeded ``/set``."""
        rows = self.conn.execute(
            "SELECT device, updated_at - acked_at FROM commands WHERE kind='set' AND status='succeeded' "
            "AND acked_at IS NOT NULL AND parent IS NULL ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [(str(r[0]), max(0.0, float(r[1]))) for r in rows]

    # -- journal -------------------------------------------------------------------------------
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
        self.conn.execute(
            "INSERT INTO journal(at, device, txn, command_id, entry, source, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), device, transaction, command_id, entry, source, dumps_text(data)),
        )

    def prune_journal(self, *, before: float, limit: int) -> int:
        """Delete those of the ``limit`` oldest journal entries written before ``before`` (epoch s);
        how many went. Oldest by ``seq``, the rowid, so no index is needed: entries are written in
        time order, and fewer than ``limit`` deleted means the old ones are gone."""
        oldest = self.conn.execute("SELECT at FROM journal ORDER BY seq LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= before:
            return 0  # the usual case, and no write transaction for it
        with self.transaction():
            cur = self.conn.execute(
                "DELETE FROM journal WHERE seq IN (SELECT seq FROM journal ORDER BY seq LIMIT ?) AND at < ?",
                (limit, before),
            )
        return cur.rowcount

    def prune_commands(self, *, before: float, limit: int) -> int:
        """Delete those of the ``limit`` oldest commands that ended and were accepted before ``before``
        (epoch s), and the refusals older than it; how many commands went. A transaction is then
        forgotten: the same one again is a new command (README: what a replay can do after that)."""
        oldest = self.conn.execute("SELECT accepted_at FROM commands ORDER BY seq LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= before:
            return 0  # the usual case, and no write transaction for it
        final = tuple(s.value for s in CommandStatus if s.is_final)
        marks = ",".join("?" * len(final))
        with self.transaction():
            cur = self.conn.execute(
                f"DELETE FROM commands WHERE seq IN (SELECT seq FROM commands ORDER BY seq LIMIT ?) "  # noqa: S608
                f"AND accepted_at < ? AND status IN ({marks}) AND answered=1",
                (limit, before, *final),
            )
            self.conn.execute("DELETE FROM refusals WHERE at < ?", (before,))
        return cur.rowcount

    def journal_entries(self, device: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, at, device, txn, command_id, entry, source, data FROM journal"
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device=?"
            params = (device,)
        return [
            {
                "seq": r[0],
                "at": r[1],
                "device": r[2],
                "transaction": r[3],
                "command_id": r[4],
                "entry": r[5],
                "source": r[6],
                "data": _loads(r[7]),
            }
            for r in self.conn.execute(sql + " ORDER BY seq", params)
        ]


class _Transaction:
    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._begin()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._store._end(exc_type is None, exc)
