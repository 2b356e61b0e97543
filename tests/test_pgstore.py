"""The PostgreSQL store alone (twin.pgdb, twin.pgstore), each test on a fresh database: the fence
refuses a commit once the lease moved; a broken connection and a server that refuses for now raise
StoreUnavailable with nothing kept (undo hooks run, nothing announced) and tell the listeners; an
inbox row goes in the same commit as what was stored for it; answered marks join whichever
partition's commit comes next; the intake's ``live_at`` is written under the intake lease only; an
overwritten value leaves the table's pages. What the SQLite store shares with it is in
tests/test_store_commits.py and tests/test_journal_retention.py, run on both."""

from __future__ import annotations

import psycopg
import pytest

from contracts.messages import CommandStatus
from tests.stores import SCHEMA, PgMember, command
from twin.pgschema import INTAKE
from twin.pgstore import VendorStore
from twin.session import SessionClock
from twin.storeapi import LeaseLost, StoreUnavailable, TwinRecord


def _take_over(pg_admin: psycopg.Connection[tuple[object, ...]], thief: PgMember, partition: int) -> int:
    """``thief`` takes ``partition`` as an instance does once its holder paused or was cut off for
    longer than the lease (its connection stays, its heartbeat and lease are as old as that)."""
    holder = pg_admin.execute("SELECT owner FROM leases WHERE partition = %s", (partition,)).fetchall()[0][0]
    pg_admin.execute(
        "UPDATE members SET heartbeat_at = clock_timestamp() - interval '1 hour' WHERE owner = %s", (holder,)
    )
    pg_admin.execute(
        "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' WHERE owner = %s", (holder,)
    )
    thief.leases.tick()
    return thief.leases.held[partition].epoch


def test_the_fence_refuses_a_commit_once_the_lease_moved(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    holder = PgMember(pg_url, name="a").start()
    thief = PgMember(pg_url, name="b")
    try:
        store = holder.view()
        with store.transaction():
            store.save_twin(TwinRecord(device="d1", version=1))
        thief.start()
        epoch = _take_over(pg_admin, thief, 0)
        assert epoch == store.epoch + 1
        lost: list[int | None] = []
        holder.db.on_lost = lambda partition, why: lost.append(partition)
        undone: list[str] = []
        sent: list[str] = []
        with pytest.raises(LeaseLost) as refused, store.transaction():
            store.on_rollback(lambda: undone.append("undone"))
            store.after_commit(lambda: sent.append("sent"))
            store.save_twin(TwinRecord(device="d1", version=2))
            store.journal(entry="state", device="d1", source="poll", data={})
        assert refused.value.partition == 0 and lost == [0]
        assert undone == ["undone"] and sent == []
        with pytest.raises(LeaseLost):
            store.journal(entry="event.alert", device="d1", source="vendor", data={})  # alone, fenced too
        assert pg_admin.execute("SELECT version FROM twins").fetchall() == [(1,)]
        assert pg_admin.execute("SELECT count(*) FROM journal").fetchall() == [(0,)]
        assert holder.db.writable  # a lease that moved is no outage of the store
        taken = thief.view()
        with taken.transaction():
            taken.save_twin(TwinRecord(device="d1", version=2))
        assert pg_admin.execute("SELECT version FROM twins").fetchall() == [(2,)]
    finally:
        thief.stop()
        holder.stop()


def test_a_broken_connection_raises_store_unavailable_with_nothing_kept(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    member = PgMember(pg_url, name="a").start()
    try:
        store = member.view()
        told: list[bool] = []
        store.writable_listeners.append(told.append)
        lost: list[int | None] = []
        member.db.on_lost = lambda partition, why: lost.append(partition)
        pid = member.db.conn.info.backend_pid
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        undone: list[str] = []
        sent: list[str] = []
        with pytest.raises(StoreUnavailable), store.transaction():
            store.on_rollback(lambda: undone.append("undone"))
            store.after_commit(lambda: sent.append("sent"))
            store.insert_command(command("t1"))
        assert undone == ["undone"] and sent == []
        assert told == [False] and lost == [None] and not store.writable and store.unwritable
        with pytest.raises(StoreUnavailable):
            store.command_by_transaction("d1", "t1")  # reads say so too
        assert not store.probe()  # a broken connection stays broken: the instance joins again
        assert pg_admin.execute("SELECT count(*) FROM commands").fetchall() == [(0,)]
        # the member lock went with the connection: another instance may take the partition now
        other = PgMember(pg_url, name="b").start()
        try:
            assert 0 in other.leases.held
        finally:
            other.stop()
    finally:
        member.stop()


def test_a_server_that_refuses_for_now_is_unavailable_until_a_probe_finds_it_back(pg_url: str) -> None:
    member = PgMember(pg_url, name="a")
    member.db.lock_timeout = 0.1
    member.start()
    try:
        store = member.view()
        told: list[bool] = []
        store.writable_listeners.append(told.append)
        with psycopg.connect(pg_url) as blocker:  # a migration, say, holds the table
            blocker.execute(f'LOCK TABLE "{SCHEMA}".twins IN ACCESS EXCLUSIVE MODE')
            undone: list[str] = []
            with pytest.raises(StoreUnavailable, match="lock timeout"), store.transaction():
                store.on_rollback(lambda: undone.append("undone"))
                store.save_twin(TwinRecord(device="d1", version=1))
            assert undone == ["undone"] and told == [False] and not store.writable
            assert store.db.is_open  # the connection stands: no partition ends for it
        assert store.probe() and store.writable and told == [False, True]
        with store.transaction():
            store.save_twin(TwinRecord(device="d1", version=1))
        assert list(store.load_twins()) == ["d1"]
    finally:
        member.stop()


def test_an_inbox_row_goes_in_the_commit_of_what_was_stored_for_it(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    holder = PgMember(pg_url, name="a").start()
    thief = PgMember(pg_url, name="b")
    try:
        intake = VendorStore(holder.db, epoch=holder.leases.held[INTAKE].epoch)
        row = (0, "locktwin/fake/d1/set", b'{"lock":"LOCKED","transaction":"t1"}', False, None, None, None, None, 0.0)
        intake.put_inbox([row, row])
        (first, _), (second, _) = pg_admin.execute("SELECT seq, partition FROM inbox ORDER BY seq").fetchall()
        store = holder.view()
        with store.transaction():
            store.consume(int(first))  # type: ignore[call-overload]
            store.insert_command(command("t1"))
        assert pg_admin.execute("SELECT seq FROM inbox").fetchall() == [(second,)]
        # the second copy: its owner is fenced out before it commits, so the row stays, nothing stored
        thief.start()
        _take_over(pg_admin, thief, 0)
        with pytest.raises(LeaseLost), store.transaction():
            store.consume(int(second))  # type: ignore[call-overload]
            store.insert_command(command("t2"))
        assert pg_admin.execute("SELECT seq FROM inbox").fetchall() == [(second,)]
        assert pg_admin.execute("SELECT txn FROM commands").fetchall() == [("t1",)]
        # the new owner takes it (a replay of t1 would be answered from the store: one command)
        taken = thief.view()
        with taken.transaction():
            taken.consume(int(second))  # type: ignore[call-overload]
        assert pg_admin.execute("SELECT count(*) FROM inbox").fetchall() == [(0,)]
        assert taken.command_by_transaction("d1", "t1") is not None
    finally:
        thief.stop()
        holder.stop()


def test_answered_marks_join_the_next_commit_of_any_partition(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    member = PgMember(pg_url, name="a", partitions=2).start()
    thief = PgMember(pg_url, name="b", partitions=2)
    try:
        p0, p1 = member.view(0), member.view(1)
        done = command("t1", status=CommandStatus.SUCCEEDED)
        with p0.transaction():
            p0.insert_command(done)
        p0.mark_answered(done.id)
        assert p0.unanswered_finals() == []  # the broker has it; only the mark waits
        with p1.transaction():  # another partition's commit carries it
            p1.save_twin(TwinRecord(device="d9", version=1))
        assert pg_admin.execute("SELECT answered FROM commands").fetchall() == [(1,)]
        # a mark survives a commit its fence refused, and a flush stores it unfenced
        other = command("t2", status=CommandStatus.FAILED)
        with p0.transaction():
            p0.insert_command(other)
        p0.mark_answered(other.id)
        thief.start()
        _take_over(pg_admin, thief, 1)
        with pytest.raises(LeaseLost), p1.transaction():
            p1.save_twin(TwinRecord(device="d9", version=2))
        assert pg_admin.execute("SELECT txn, answered FROM commands ORDER BY seq").fetchall() == [("t1", 1), ("t2", 0)]
        assert p0.unanswered_finals() == []
        member.db.flush()
        assert pg_admin.execute("SELECT txn, answered FROM commands ORDER BY seq").fetchall() == [("t1", 1), ("t2", 1)]
    finally:
        thief.stop()
        member.stop()


def test_the_intakes_live_at_is_written_under_the_intake_lease_only(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    holder = PgMember(pg_url, name="a").start()
    thief = PgMember(pg_url, name="b")
    try:
        intake = VendorStore(holder.db, epoch=holder.leases.held[INTAKE].epoch)
        clock = SessionClock(store=intake, marker_topic="locktwin/bridge/fake/session")
        clock.connected(session_present=False)  # a clean session: live at once
        clock.heartbeat(now=1000.0)
        assert pg_admin.execute("SELECT value FROM meta WHERE key = 'live_at'").fetchall() == [("1000.0",)]
        assert holder.view().meta("live_at") is None  # a partition's meta is its own
        thief.start()
        _take_over(pg_admin, thief, INTAKE)
        with pytest.raises(LeaseLost):
            clock.heartbeat(now=2000.0)  # a paused holder woke up: it writes nothing
        assert pg_admin.execute("SELECT value FROM meta WHERE key = 'live_at'").fetchall() == [("1000.0",)]
        mine = SessionClock(store=VendorStore(thief.db, epoch=thief.leases.held[INTAKE].epoch), marker_topic="m")
        mine.connected(session_present=False)
        mine.heartbeat(now=3000.0)
        assert pg_admin.execute("SELECT value FROM meta WHERE key = 'live_at'").fetchall() == [("3000.0",)]
    finally:
        thief.stop()
        holder.stop()


def test_an_overwritten_value_leaves_the_tables_pages(
    pg_url: str, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """forget_old_copies: the row version that held a full card id is pruned by a VACUUM."""
    pg_admin.execute("CREATE EXTENSION IF NOT EXISTS pageinspect WITH SCHEMA public")
    member = PgMember(pg_url, name="a").start()
    try:
        store = member.view()
        cmd = command("t1")
        cmd.value = "CARD-0042-7f3a9b2c"
        with store.transaction():
            store.insert_command(cmd)
        cmd.value, cmd.status = "****9b2c", CommandStatus.SUCCEEDED
        with store.transaction():
            store.update_command(cmd)
            store.forget_old_copies()

        def copies() -> int:
            rows = pg_admin.execute(
                "SELECT count(*) FROM public.heap_page_items(public.get_raw_page(%s, 0)) "
                "WHERE position(%s in t_data) > 0",
                (f"{SCHEMA}.commands", b"CARD-0042"),
            ).fetchall()
            return int(rows[0][0])  # type: ignore[call-overload]

        assert copies() == 1  # the old row version is still in the page
        member.db.vacuum_if_due()
        assert copies() == 0
        assert store.command(cmd.id) is not None and store.command(cmd.id).value == "****9b2c"  # type: ignore[union-attr]
    finally:
        member.stop()
