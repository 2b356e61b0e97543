"""Group commit (twin.pgwriter) on a fresh database: transactions closed while the writer runs are
committed together, off the event loop, and announced only after; reads see what is queued; one
partition's lost lease is not another's failure; a broken connection undoes everything queued,
newest first, and nothing of it is announced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from contracts.messages import CommandStatus
from tests.stores import PgMember, command
from twin.storeapi import LeaseLost, StoreUnavailable, TwinRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
async def member(pg_url: str) -> AsyncIterator[PgMember]:
    """An instance holding both partitions, its writer running."""
    held = PgMember(pg_url, name="a", partitions=2).start()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(held.db.writer.run)
            yield held
            tg.cancel_scope.cancel()
    finally:
        held.stop()


async def test_transactions_closed_together_are_one_commit_announced_after_it(
    member: PgMember, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    store = member.view(0)
    sent: list[str] = []
    writer = member.db.writer
    groups = writer.groups
    for n in range(50):  # no await between them: the writer takes them all at once
        with store.transaction():
            store.save_twin(TwinRecord(device=f"d{n}", version=1))
            store.after_commit(lambda n=n: sent.append(f"t{n}"))  # type: ignore[misc]
    store.after_commit(lambda: sent.append("outside"))  # no transaction open: it waits for the queued
    member.view(1).after_commit(lambda: sent.append("other"))  # nothing of partition 1 waits: now
    assert sent == ["other"]
    assert pg_admin.execute("SELECT count(*) FROM twins").fetchall() == [(0,)]  # nothing sent yet
    await store.settled()
    assert pg_admin.execute("SELECT count(*) FROM twins").fetchall() == [(50,)]
    assert sent == ["other", *(f"t{n}" for n in range(50)), "outside"]
    assert writer.groups == groups + 1


async def test_reads_see_what_is_queued(member: PgMember, pg_admin: psycopg.Connection[tuple[object, ...]]) -> None:
    store = member.view(0)
    cmd = command("t1")
    with store.transaction():
        store.insert_command(cmd)
        store.refuse("d1", "t2", "fp", {"code": "EXPIRED"})
    cmd.status = CommandStatus.SENT
    store.update_command(cmd)
    assert pg_admin.execute("SELECT count(*) FROM commands").fetchall() == [(0,)]
    found = store.command_by_transaction("d1", "t1")
    assert found is not None and found.id == cmd.id and found.status == CommandStatus.SENT
    assert found is not cmd  # a copy, as a read from the table is
    assert store.command(cmd.id) is not None
    assert store.refusal("d1", "t2", "fp") == {"code": "EXPIRED"}
    assert store.refusal("d1", "t2", "another") is None
    await store.settled()
    assert pg_admin.execute("SELECT status FROM commands").fetchall() == [("sent",)]
    again = store.command_by_transaction("d1", "t1")
    assert again is not None and again.status == CommandStatus.SENT and again.seq > 0


async def test_a_partition_whose_lease_moved_fails_alone(
    member: PgMember, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    lost: list[int | None] = []
    member.db.on_lost = lambda partition, why: lost.append(partition)
    pg_admin.execute("UPDATE leases SET owner = 'thief#1', epoch = epoch + 1 WHERE partition = 0")
    gone, kept = member.view(0), member.view(1)
    undone: list[int] = []
    sent: list[int] = []
    for partition, store in ((0, gone), (1, kept), (0, gone)):
        with store.transaction():
            store.on_rollback(lambda p=partition: undone.append(p))  # type: ignore[misc]
            store.after_commit(lambda p=partition: sent.append(p))  # type: ignore[misc]
            store.save_twin(TwinRecord(device=f"d-{partition}-{len(undone)}-{len(sent)}", version=1))
    with pytest.raises(LeaseLost) as refused:
        await member.db.settled()
    assert refused.value.partition == 0 and 0 in lost and None not in lost
    assert sent == [1] and undone == [0, 0]
    assert pg_admin.execute("SELECT partition FROM twins").fetchall() == [(1,)]
    assert member.db.writable  # a lease that moved is no outage of the store


async def test_a_broken_connection_undoes_everything_queued_newest_first(
    member: PgMember, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    lost: list[int | None] = []
    member.db.on_lost = lambda partition, why: lost.append(partition)
    pg_admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'locktwin writer %'"
    )
    store = member.view(0)
    undone: list[int] = []
    sent: list[int] = []
    for n in range(3):
        with store.transaction():
            store.on_rollback(lambda n=n: undone.append(n))  # type: ignore[misc]
            store.after_commit(lambda n=n: sent.append(n))  # type: ignore[misc]
            store.insert_command(command(f"t{n}"))
    assert store.command_by_transaction("d1", "t0") is not None  # queued: the reads see it
    with pytest.raises(StoreUnavailable):
        await store.settled()
    assert sent == [] and undone == [2, 1, 0] and lost == [None]
    assert not store.writable
    assert pg_admin.execute("SELECT count(*) FROM commands").fetchall() == [(0,)]
    assert member.db.writer.pending_by_transaction("d1", "t0") is None  # not stored: no read finds it
