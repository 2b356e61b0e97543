"""The fleet service's own SQLite store: jobs, executions, zones, GBFS vehicle ids, rule commands
and the journal.

What must survive a SIGKILL is written before it is acted on: a job before its ``job_create`` is
answered, an execution marked IN_PROGRESS before its command is published, a rule command before
it is sent. Final outcomes are deferred (:meth:`later`) and committed together at most
:data:`FLUSH_INTERVAL` later: one lost in a crash leaves its execution IN_PROGRESS, and the
restarted service sends the same transaction again, which the bridge answers from its own store
without a second vendor call. Prepared statements on one connection, WAL, ``synchronous=NORMAL``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from twin.jsonenc import dumps_text

__all__ = ["FLUSH_INTERVAL", "ExecutionRow", "FleetStore", "JobRow"]

FLUSH_INTERVAL = 0.1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, request_tx TEXT UNIQUE, spec TEXT NOT NULL, status TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0, run INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL, next_run_at REAL, reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    job_id TEXT NOT NULL, run INTEGER NOT NULL, seq INTEGER NOT NULL, vendor TEXT NOT NULL,
    device TEXT NOT NULL, status TEXT NOT NULL, txn TEXT NOT NULL, issued_at REAL, ended_at REAL,
    error TEXT, PRIMARY KEY (job_id, run, seq)
);
CREATE TABLE IF NOT EXISTS zones (id TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vehicles (
    vendor TEXT NOT NULL, device TEXT NOT NULL, vehicle_id TEXT NOT NULL UNIQUE, since REAL NOT NULL,
    latitude REAL, longitude REAL, PRIMARY KEY (vendor, device)
);
CREATE TABLE IF NOT EXISTS rule_commands (
    txn TEXT PRIMARY KEY, rule TEXT NOT NULL, zone TEXT NOT NULL, vendor TEXT NOT NULL, device TEXT NOT NULL,
    status TEXT NOT NULL, issued_at REAL NOT NULL, timeout REAL NOT NULL, ended_at REAL, error TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, entry TEXT NOT NULL, source TEXT NOT NULL,
    vendor TEXT, device TEXT, txn TEXT, data TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(kw_only=True)
class JobRow:
    id: str
    request_tx: str | None
    spec: dict[str, Any]
    status: str
    paused: bool
    run: int
    total: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    next_run_at: float | None
    reason: str | None
    updated_at: float


@dataclass(kw_only=True, slots=True)
class ExecutionRow:
    job_id: str
    run: int
    seq: int
    vendor: str
    device: str
    status: str
    txn: str
    issued_at: float | None = None
    ended_at: float | None = None
    error: dict[str, Any] | None = None


_JOB_COLUMNS = (
    "id, request_tx, spec, status, paused, run, total, created_at, started_at, ended_at, next_run_at, reason, "
    "updated_at"
)


def _job(row: tuple[Any, ...]) -> JobRow:
    return JobRow(
        id=row[0],
        request_tx=row[1],
        spec=orjson.loads(row[2]),
        status=row[3],
        paused=bool(row[4]),
        run=row[5],
        total=row[6],
        created_at=row[7],
        started_at=row[8],
        ended_at=row[9],
        next_run_at=row[10],
        reason=row[11],
        updated_at=row[12],
    )


class FleetStore:
    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._depth = 0
        self._later: list[tuple[str, tuple[Any, ...]]] = []

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("FleetStore.open() was not called")
        return self._conn

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self.flush()
            self._conn.close()
            self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        if self._depth:
            self._depth += 1
            try:
                yield conn
            finally:
                self._depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            self._run_later(conn)
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._depth = 0

    def later(self, sql: str, params: tuple[Any, ...]) -> None:
        """A write nothing waits for: it joins the next commit, or :meth:`flush`."""
        self._later.append((sql, params))

    def flush(self) -> None:
        if self._later:
            with self.transaction():
                pass

    def _run_later(self, conn: sqlite3.Connection) -> None:
        pending, self._later = self._later, []
        for sql, params in pending:
            conn.execute(sql, params)

    # -- jobs ------------------------------------------------------------------------------------
    def insert_job(self, job: JobRow) -> None:
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant columns
                (
                    job.id,
                    job.request_tx,
                    dumps_text(job.spec),
                    job.status,
                    int(job.paused),
                    job.run,
                    job.total,
                    job.created_at,
                    job.started_at,
                    job.ended_at,
                    job.next_run_at,
                    job.reason,
                    job.updated_at,
                ),
            )

    def save_job(self, job: JobRow) -> None:
        job.updated_at = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status=?, paused=?, run=?, total=?, started_at=?, ended_at=?, next_run_at=?, "
                "reason=?, updated_at=? WHERE id=?",
                (
                    job.status,
                    int(job.paused),
                    job.run,
                    job.total,
                    job.started_at,
                    job.ended_at,
                    job.next_run_at,
                    job.reason,
                    job.updated_at,
                    job.id,
                ),
            )

    def jobs(self) -> list[JobRow]:
        rows = self.conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at, id")  # noqa: S608 - constant
        return [_job(r) for r in rows]

    def job_by_request(self, request_tx: str) -> str | None:
        row = self.conn.execute("SELECT id FROM jobs WHERE request_tx=?", (request_tx,)).fetchone()
        return None if row is None else str(row[0])

    # -- executions ------------------------------------------------------------------------------
    def insert_executions(self, rows: list[ExecutionRow]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO executions (job_id, run, seq, vendor, device, status, txn, issued_at, ended_at, error) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.job_id,
                        r.run,
                        r.seq,
                        r.vendor,
                        r.device,
                        r.status,
                        r.txn,
                        r.issued_at,
                        r.ended_at,
                        None if r.error is None else dumps_text(r.error),
                    )
                    for r in rows
                ],
            )

    def mark_sent(self, rows: list[ExecutionRow]) -> None:
        """IN_PROGRESS, committed before their commands go out."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE executions SET status=?, issued_at=? WHERE job_id=? AND run=? AND seq=?",
                [(row.status, row.issued_at, row.job_id, row.run, row.seq) for row in rows],
            )

    def finish_later(self, row: ExecutionRow) -> None:
        self.later(
            "UPDATE executions SET status=?, ended_at=?, error=? WHERE job_id=? AND run=? AND seq=?",
            (
                row.status,
                row.ended_at,
                None if row.error is None else dumps_text(row.error),
                row.job_id,
                row.run,
                row.seq,
            ),
        )

    def executions(self, job_id: str, run: int) -> list[ExecutionRow]:
        rows = self.conn.execute(
            "SELECT job_id, run, seq, vendor, device, status, txn, issued_at, ended_at, error FROM executions "
            "WHERE job_id=? AND run=? ORDER BY seq",
            (job_id, run),
        )
        return [
            ExecutionRow(
                job_id=r[0],
                run=r[1],
                seq=r[2],
                vendor=r[3],
                device=r[4],
                status=r[5],
                txn=r[6],
                issued_at=r[7],
                ended_at=r[8],
                error=None if r[9] is None else orjson.loads(r[9]),
            )
            for r in rows
        ]

    # -- zones, vehicles, rules ------------------------------------------------------------------
    def zones(self) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in self.conn.execute("SELECT doc FROM zones ORDER BY id")]

    def put_zone(self, zone_id: str, doc: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO zones (id, doc, updated_at) VALUES (?,?,?)",
                (zone_id, dumps_text(doc), time.time()),
            )

    def delete_zone(self, zone_id: str) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM zones WHERE id=?", (zone_id,)).rowcount > 0

    def vehicles(self) -> dict[tuple[str, str], tuple[str, float | None, float | None]]:
        rows = self.conn.execute("SELECT vendor, device, vehicle_id, latitude, longitude FROM vehicles")
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}

    def put_vehicle(self, vendor: str, device: str, vehicle_id: str, lat: float | None, lon: float | None) -> None:
        self.later(
            "INSERT OR REPLACE INTO vehicles (vendor, device, vehicle_id, since, latitude, longitude) "
            "VALUES (?,?,?,?,?,?)",
            (vendor, device, vehicle_id, time.time(), lat, lon),
        )

    def drop_vehicle(self, vendor: str, device: str) -> None:
        self.later("DELETE FROM vehicles WHERE vendor=? AND device=?", (vendor, device))

    def insert_rule_command(
        self, *, txn: str, rule: str, zone: str, vendor: str, device: str, issued_at: float, timeout: float
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rule_commands (txn, rule, zone, vendor, device, status, issued_at, timeout) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (txn, rule, zone, vendor, device, "IN_PROGRESS", issued_at, timeout),
            )

    def finish_rule_command(self, txn: str, status: str, error: dict[str, Any] | None) -> None:
        self.later(
            "UPDATE rule_commands SET status=?, ended_at=?, error=? WHERE txn=?",
            (status, time.time(), None if error is None else dumps_text(error), txn),
        )

    def open_rule_commands(self) -> list[tuple[str, str, str, str, str, float, float]]:
        return list(
            self.conn.execute(
                "SELECT txn, rule, zone, vendor, device, issued_at, timeout FROM rule_commands "
                "WHERE status='IN_PROGRESS'"
            )
        )

    def next_sequence(self, name: str) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
            value = 1 if row is None else int(row[0]) + 1
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)", (name, str(value)))
            return value

    # -- journal ---------------------------------------------------------------------------------
    def journal(
        self,
        entry: str,
        *,
        source: str,
        vendor: str | None = None,
        device: str | None = None,
        txn: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.later(
            "INSERT INTO journal (at, entry, source, vendor, device, txn, data) VALUES (?,?,?,?,?,?,?)",
            (time.time(), entry, source, vendor, device, txn, None if data is None else dumps_text(data)),
        )
