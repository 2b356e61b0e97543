"""The pushes already stored, so that a replayed push changes nothing.

Segway's pushes carry no nonce: a captured push, signature and all, is valid forever. What bounds
it is its own timestamp (``statusUtcTime``, ``gpsUtcTime``) and this ledger:

- a push dated more than ``window`` seconds before it arrives is **stale**: refused (answered 200,
  so that Segway does not send it again) whatever it says;
- a push inside the window is remembered by its signature (the MD5 over every field, so two pushes
  with the same signature are the same push) once it is stored, until it leaves the window; the
  same signature again is a **replay**: refused the same way.

So a push is stored at most once, replayed or not, across restarts too: the ledger is a small SQLite
file in the adapter's data folder (``pushes.sqlite``), written before the push is answered, so what
a crash forgets is only a push Segway has not been told was stored (and sends again). It is bounded:
entries leave once their window has passed, and at ``capacity`` the oldest go first and the window
shrinks to what is remembered (pushes dated at or before the newest forgotten one are refused as
stale), so a forgotten push can never be accepted again.

A push dated in the future is remembered until its own date has left the window (however far
ahead: the engine clamps such a date to when it arrived, so without this a replay would be newer
every time).
"""

from __future__ import annotations

import sqlite3
import time
from enum import Enum
from pathlib import Path

from twin.files import private_file

__all__ = ["DEFAULT_PUSH_WINDOW", "DEFAULT_REPLAY_CAPACITY", "PushLedger", "Verdict"]

#: seconds a push may be older than its arrival (Segway retries once, after 5 s)
DEFAULT_PUSH_WINDOW = 300.0
#: pushes remembered at most (~100 bytes each on disk): 1,000 a second for the default window
DEFAULT_REPLAY_CAPACITY = 300_000
#: seconds between deletions of entries whose window has passed
_PRUNE_EVERY = 1.0
#: share of the capacity forgotten at once when it is reached (one DELETE, not one per push)
_EVICT_SHARE = 0.01


class Verdict(Enum):
    NEW = "new"
    REPLAYED = "replayed"
    STALE = "stale"


class PushLedger:
    """Signatures of stored pushes, for ``window`` seconds. ``path`` None keeps them in memory only."""

    def __init__(self, *, path: Path | None, window: float, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        self.path = path
        self.window = window
        self.capacity = capacity
        self._db: sqlite3.Connection | None = None
        self._count = 0
        #: pushes dated at or before this were forgotten for room: refused as stale
        self._floor = float("-inf")
        self._pruned_at = 0.0

    def open(self, *, now: float | None = None) -> None:
        """Open (or create, 0600) the file; entries whose window passed before ``now`` go."""
        if self.path is None:
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(private_file(self.path), isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            "CREATE TABLE IF NOT EXISTS pushes(signature TEXT PRIMARY KEY, observed REAL NOT NULL, "
            "until REAL NOT NULL) WITHOUT ROWID;"
            "CREATE INDEX IF NOT EXISTS pushes_until ON pushes(until);"
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value REAL NOT NULL);"
        )
        row = db.execute("SELECT value FROM meta WHERE key='floor'").fetchone()
        self._floor = float("-inf") if row is None else float(row[0])
        self._db = db
        self._prune(time.time() if now is None else now)
        self._count = int(db.execute("SELECT COUNT(*) FROM pushes").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("PushLedger.open() was not called")
        return self._db

    def __len__(self) -> int:
        return self._count

    def verdict(self, signature: str, observed: float, *, now: float) -> Verdict:
        """What to do with a push dated ``observed`` (epoch seconds) arriving ``now``."""
        if observed < now - self.window or observed <= self._floor:
            return Verdict.STALE
        row = self.db.execute("SELECT 1 FROM pushes WHERE signature=?", (signature,)).fetchone()
        return Verdict.NEW if row is None else Verdict.REPLAYED

    def remember(self, signature: str, observed: float, *, now: float) -> None:
        """The push was stored: a copy of it is a replay until it leaves the window (durable on return)."""
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._prune(now)
        if self._count >= self.capacity:
            self._evict()
        until = max(observed, now) + self.window
        cur = self.db.execute(
            "INSERT OR IGNORE INTO pushes(signature, observed, until) VALUES (?, ?, ?)", (signature, observed, until)
        )
        self._count += cur.rowcount

    def _prune(self, now: float) -> None:
        # an entry past its ``until`` is dated before ``now - window``: stale anyway
        self._pruned_at = now
        cur = self.db.execute("DELETE FROM pushes WHERE until < ?", (now,))
        self._count = max(0, self._count - max(cur.rowcount, 0))

    def _evict(self) -> None:
        """Forget the entries that leave the window first, and refuse whatever they could be copies of."""
        batch = max(1, int(self.capacity * _EVICT_SHARE))
        oldest = "SELECT signature, observed FROM pushes ORDER BY until LIMIT ?"
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            newest, count = db.execute(f"SELECT MAX(observed), COUNT(*) FROM ({oldest})", (batch,)).fetchone()  # noqa: S608
            if newest is not None:
                self._floor = max(self._floor, float(newest))
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('floor', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (self._floor,),
                )
            db.execute(f"DELETE FROM pushes WHERE signature IN (SELECT signature FROM ({oldest}))", (batch,))  # noqa: S608
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count = max(0, self._count - int(count or 0))
