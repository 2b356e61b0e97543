"""The audit journal keeps ``journal_days`` (twin.store.prune_journal, run by the runtime each second):
old entries go in bounded batches, young ones and the commands table stay, so a replayed transaction
is still answered from the store and never sent to the vendor again."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from tests.fake_adapter import FakeAdapter
from tests.stores import StoreCase
from twin.config import BridgeOptions
from twin.store import Store, TwinStore
from twin.testing import BridgeHarness


def _entries(case: StoreCase, count: int, *, at: float) -> None:
    with case.store.transaction():
        for i in range(count):
            case.store.journal(entry="state", device=f"d{i % 3}", source="poll", data={"i": i})
    case.execute("UPDATE journal SET at=? WHERE at > ?", at, at)


def test_prune_deletes_the_oldest_in_batches_and_stops_at_young_entries(twin_store: StoreCase) -> None:
    store = twin_store.store
    now = time.time()
    _entries(twin_store, 1200, at=now - 40 * 86_400)
    [(old_seq,)] = twin_store.durable("SELECT max(seq) FROM journal")
    with store.transaction():
        for i in range(30):
            store.journal(entry="state", device="d1", source="push", data={"young": i})
    before = now - 30 * 86_400

    assert twin_store.retention.prune_journal(before=before, limit=500) == 500
    assert twin_store.retention.prune_journal(before=before, limit=500) == 500
    assert (
        twin_store.retention.prune_journal(before=before, limit=500) == 200
    )  # the rest of the old ones, not the young
    assert twin_store.retention.prune_journal(before=before, limit=500) == 0
    left = store.journal_entries()
    assert len(left) == 30 and all(e["seq"] > old_seq for e in left)
    assert [e["data"] for e in left] == [{"young": i} for i in range(30)]


def test_prune_of_a_young_journal_writes_nothing(store: Store) -> None:
    with store.transaction():
        for i in range(10):
            store.journal(entry="state", device=f"d{i % 3}", source="poll", data={"i": i})
    changes = store.conn.total_changes
    assert store.prune_journal(before=time.time() - 86_400, limit=500) == 0
    assert store.conn.total_changes == changes


@pytest.mark.anyio
async def test_a_bridge_prunes_its_journal_and_still_refuses_a_replay(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    options = BridgeOptions(journal_days=1 / 86_400)  # a second
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        first = await h.set("d1", {"lock": "UNLOCKED", "transaction": "kept"})
        assert first["status"] == "succeeded"
        assert h.runtime is not None
        store = h.runtime.store
        assert any(e["transaction"] == "kept" for e in store.journal_entries())
        with anyio.fail_after(20):  # the runtime prunes once a second
            while any(e["transaction"] == "kept" for e in store.journal_entries()):  # noqa: ASYNC110 - no event for a table
                await anyio.sleep(0.1)
        assert store.command_by_transaction("d1", "kept") is not None  # commands are kept
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "kept"})
        await h.wait_for(lambda: len([r for r in h.responses("d1") if r["transaction"] == "kept"]) == 4)
        assert adapter.calls == [("d1", "unlock")]


def _command(store: TwinStore, n: int, *, accepted_at: float, status: str = "succeeded") -> None:
    from contracts.messages import CommandStatus
    from twin.store import CommandRecord

    cmd = CommandRecord(
        id=f"c{n}",
        device="d1",
        transaction=f"t{n}",
        kind="set",
        name="lock",
        value="LOCKED",
        status=CommandStatus(status),
        source="mqtt",
        accepted_at=accepted_at,
        expires_at=accepted_at + 30,
        updated_at=accepted_at,
        answered=True,
    )
    store.insert_command(cmd)


def test_commands_older_than_their_retention_go_and_open_ones_stay(twin_store: StoreCase) -> None:
    """``commands_days``: ended and answered commands accepted before it go in batches, the young
    and the open ones stay (twin.store.prune_commands; on PostgreSQL the vendor's view prunes every
    partition)."""
    store = twin_store.store
    pruner = twin_store.retention
    now = time.time()
    old = now - 40 * 86_400
    with store.transaction():
        for n in range(700):
            _command(store, n, accepted_at=old)
        _command(store, 700, accepted_at=old, status="accepted")  # never ended: kept
        for n in range(701, 710):
            _command(store, n, accepted_at=now)
        store.refuse("d1", "r-old", "f", {"code": "EXPIRED"})
    twin_store.execute("UPDATE refusals SET at=?", old)
    before = now - 30 * 86_400
    assert pruner.prune_commands(before=before, limit=500) == 500
    assert pruner.prune_commands(before=before, limit=500) == 200
    assert pruner.prune_commands(before=before, limit=500) == 0
    left = [row[0] for row in twin_store.durable("SELECT txn FROM commands ORDER BY seq")]
    assert left == ["t700", *(f"t{n}" for n in range(701, 710))]
    assert store.refusal("d1", "r-old", "f") is None
    assert store.command_by_transaction("d1", "t1") is None  # that transaction is forgotten
