"""The twin stores the store tests run on: SQLite in a fresh file, and one partition of a PostgreSQL
store in a fresh database (created for the test and dropped after it; see tests/faults/pg.py).

:class:`StoreCase` gives a test the store under test and what a test needs beside it: what another
connection reads (what a process finds after a crash), a change made behind the store's back (a
date in the past), and a restart on the same data. Statements are written once, in SQLite's
dialect with ``?`` placeholders; the PostgreSQL case turns them into its own.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg

from contracts.messages import CommandStatus
from tests.faults import pg
from twin.leases import LeaseManager, new_owner
from twin.pgdb import PgDatabase
from twin.pgstore import PartitionStore, VendorStore
from twin.store import Store
from twin.storeapi import CommandRecord, TwinStore

__all__ = ["KINDS", "PgMember", "StoreCase", "command", "store_case"]

KINDS = ("sqlite", "postgresql")
SCHEMA = "locktwin_fake"


def command(
    transaction: str = "t1", *, device: str = "d1", status: CommandStatus = CommandStatus.ACCEPTED
) -> CommandRecord:
    """A /set of ``lock`` on ``device``, accepted now, expiring in a minute."""
    now = time.time()
    return CommandRecord(
        id=f"c-{transaction}",
        device=device,
        transaction=transaction,
        kind="set",
        name="lock",
        value="LOCKED",
        status=status,
        source="mqtt",
        accepted_at=now,
        expires_at=now + 60,
        updated_at=now,
    )


class PgMember:
    """One instance's membership of a PostgreSQL store: its database, its leases, its views."""

    def __init__(self, url: str, *, name: str, partitions: int = 1, lease_seconds: float = 10.0) -> None:
        self.db = PgDatabase(conninfo=url, password=None, schema=SCHEMA, partitions=partitions, owner=new_owner(name))
        self.leases = LeaseManager(db=self.db, vendor="fake", name=name, lease_seconds=lease_seconds)

    def start(self) -> PgMember:
        self.db.open()
        self.leases.join()
        self.leases.tick()
        return self

    def view(self, partition: int = 0) -> PartitionStore:
        lease = self.leases.held[partition]
        return PartitionStore(self.db, partition=partition, epoch=lease.epoch)

    def stop(self) -> None:
        if self.db.is_open:
            self.leases.leave()
        self.db.close()


class StoreCase:
    def __init__(self, kind: Literal["sqlite", "postgresql"], store: TwinStore, reader: Any, restart: Any) -> None:
        self.kind = kind
        self.store = store
        self._reader = reader
        self._restart = restart

    def _sql(self, sql: str) -> str:
        return sql if self.kind == "sqlite" else sql.replace("?", "%s")

    def durable(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """What another connection reads."""
        return [tuple(row) for row in self._reader(self._sql(sql), params)]

    def execute(self, sql: str, *params: object) -> None:
        """A change behind the store's back, committed at once."""
        self._reader(self._sql(sql), params, write=True)

    @property
    def retention(self) -> TwinStore:
        """The store that prunes: the same, or on PostgreSQL the vendor's view (every partition)."""
        store = self.store
        return VendorStore(store.db, epoch=0) if isinstance(store, PartitionStore) else store

    def restart(self) -> TwinStore:
        """Close the store (as a clean stop does) and open it again on the same data."""
        self.store = self._restart()
        return self.store


@contextmanager
def store_case(kind: str, tmp_path: Path) -> Iterator[StoreCase]:
    with ExitStack() as stack:
        if kind == "sqlite":
            path = tmp_path / "twins.sqlite"
            store = Store(path=path)
            store.open()

            def close_sqlite() -> None:  # the store of the last restart
                assert isinstance(case.store, Store)
                case.store.close()

            stack.callback(close_sqlite)

            def read_sqlite(sql: str, params: tuple[object, ...], write: bool = False) -> list[Any]:
                conn = sqlite3.connect(path, isolation_level=None)
                try:
                    return conn.execute(sql, params).fetchall()
                finally:
                    conn.close()

            def restart_sqlite() -> TwinStore:
                assert isinstance(case.store, Store)
                case.store.close()
                again = Store(path=path)
                again.open()
                return again

            case = StoreCase("sqlite", store, read_sqlite, restart_sqlite)
        else:
            pg.require()
            url = stack.enter_context(pg.fresh_database())
            members = [PgMember(url, name="test").start()]
            stack.callback(lambda: [m.stop() for m in members])
            reader = stack.enter_context(psycopg.connect(url, autocommit=True))
            reader.execute(f'SET search_path TO "{SCHEMA}"')

            def read_pg(sql: str, params: tuple[object, ...], write: bool = False) -> list[Any]:
                cur = reader.execute(sql, params)  # type: ignore[arg-type]
                return [] if write else cur.fetchall()

            def restart_pg() -> TwinStore:
                members[-1].stop()
                members.append(PgMember(url, name="test").start())
                return members[-1].view()

            case = StoreCase("postgresql", members[0].view(), read_pg, restart_pg)
        yield case
