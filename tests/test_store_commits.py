"""The store's commits, on both stores (SQLite, and a partition of the PostgreSQL store): nested
transactions join the outermost, what waits for a commit runs only after it (never after a
rollback), undo hooks run only after a rollback, and answered marks join the next commit or a flush.
Real SQLite files and a real PostgreSQL database; a second connection reads what is durable (what a
process finds after a crash)."""

from __future__ import annotations

import pytest

from contracts.messages import CommandStatus, EventType
from contracts.topics import Topics
from tests.stores import StoreCase, command
from twin.outbound import Outbound
from twin.store import TwinRecord


def test_nested_transactions_commit_once_and_release_after_the_outermost(twin_store: StoreCase) -> None:
    store = twin_store.store
    seen: list[str] = []
    with store.transaction():
        store.save_twin(TwinRecord(device="d1", version=1))
        with store.transaction():
            store.save_twin(TwinRecord(device="d2", version=1))
            store.after_commit(lambda: seen.append("inner"))
        assert seen == []  # the inner block ended, the commit did not
        assert twin_store.durable("SELECT device FROM twins") == []
        store.after_commit(lambda: seen.append("outer"))
    assert seen == ["inner", "outer"]
    assert sorted(twin_store.durable("SELECT device FROM twins")) == [("d1",), ("d2",)]
    store.after_commit(lambda: seen.append("now"))  # outside a transaction: at once
    assert seen[-1] == "now"


def test_a_rollback_drops_what_waited_for_the_commit(twin_store: StoreCase) -> None:
    store = twin_store.store
    seen: list[str] = []
    with pytest.raises(RuntimeError), store.transaction():
        store.save_twin(TwinRecord(device="d1", version=1))
        store.after_commit(lambda: seen.append("never"))
        raise RuntimeError("a bug")
    assert seen == []
    assert twin_store.durable("SELECT device FROM twins") == []
    assert not store.in_transaction
    with store.transaction():  # and the store still works
        store.save_twin(TwinRecord(device="d1", version=1))
    assert twin_store.durable("SELECT device FROM twins") == [("d1",)]


def test_answered_marks_are_deferred_and_flushed(twin_store: StoreCase) -> None:
    store = twin_store.store
    cmd = command()
    cmd.status = CommandStatus.SUCCEEDED
    with store.transaction():
        store.insert_command(cmd)
    assert [c.id for c in store.unanswered_finals()] == [cmd.id]
    store.mark_answered(cmd.id)
    assert twin_store.durable("SELECT answered FROM commands") == [(0,)]  # a crash repeats the answer
    store.flush()
    assert twin_store.durable("SELECT answered FROM commands") == [(1,)]
    assert store.unanswered_finals() == []
    other = command(transaction="t2")
    other.status = CommandStatus.FAILED
    with store.transaction():
        store.insert_command(other)
    store.mark_answered(other.id)
    assert store.unanswered_finals() == []  # a reconnect does not repeat what the broker took


def test_answered_marks_join_the_next_commit_and_close_flushes_them(twin_store: StoreCase) -> None:
    store = twin_store.store
    first, second = command(transaction="t1"), command(transaction="t2")
    first.status = CommandStatus.SUCCEEDED
    with store.transaction():
        store.insert_command(first)
    store.mark_answered(first.id)
    with store.transaction():
        store.insert_command(second)
    assert twin_store.durable("SELECT txn, answered FROM commands ORDER BY seq") == [("t1", 1), ("t2", 0)]
    second.status = CommandStatus.FAILED
    with store.transaction():
        store.update_command(second)
    store.mark_answered(second.id)
    store = twin_store.restart()  # a clean stop: the last mark is not left for a second answer
    assert twin_store.durable("SELECT txn, answered FROM commands ORDER BY seq") == [("t1", 1), ("t2", 1)]
    assert store.unanswered_finals() == []


def test_outbound_announces_nothing_before_its_commit(twin_store: StoreCase) -> None:
    store = twin_store.store
    sent: list[str] = []

    class Recorder:
        maximum_packet_size = None

        def send(self, topic: str, payload: bytes, **kw: object) -> None:
            sent.append(topic)

        def feed(self, steps: object) -> None:
            raise AssertionError("nothing is fed here")

    out = Outbound(
        topics=Topics(base="locktwin", vendor="fake"), store=store, held=lambda d: False, current_of=lambda d: None
    )
    out.use(Recorder())
    with store.transaction():
        out.event("d1", EventType.DRIFT, {"field": "lock"})
        assert sent == []
    assert sent == ["locktwin/fake/d1/event"]
    with pytest.raises(RuntimeError), store.transaction():
        out.event("d1", EventType.DRIFT, {"field": "lock"})
        raise RuntimeError("rolled back: never announced")
    assert sent == ["locktwin/fake/d1/event"]


def test_undo_runs_when_the_outermost_transaction_rolls_back(twin_store: StoreCase) -> None:
    store = twin_store.store
    """What a nested writer changed in memory is undone when the commit it joined is lost."""
    undone: list[str] = []
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():  # an inner writer: it returned normally
            store.on_rollback(lambda: undone.append("inner"))
            store.set_meta("k", "v")
        raise RuntimeError("the outer one fails after it")
    assert undone == ["inner"] and store.meta("k") is None
    with store.transaction():
        store.on_rollback(lambda: undone.append("committed"))
        store.set_meta("k", "v")
    assert undone == ["inner"] and store.meta("k") == "v"


def test_a_refusal_is_remembered_for_its_transaction_and_what_it_asked(twin_store: StoreCase) -> None:
    """A command refused for its age is answered the same when it comes again, after a restart too."""
    store = twin_store.store
    assert store.refusal("d1", "t-old", "f1") is None
    with store.transaction():
        store.refuse("d1", "t-old", "f1", {"code": "EXPIRED", "message": "too old"})
        store.refuse("d1", "t-old", "f1", {"code": "EXPIRED", "message": "a second time"})  # the first stays
    assert store.refusal("d1", "t-old", "f1") == {"code": "EXPIRED", "message": "too old"}
    assert store.refusal("d1", "t-old", "f2") is None  # another command under that transaction
    store = twin_store.restart()
    assert store.refusal("d1", "t-old", "f1") == {"code": "EXPIRED", "message": "too old"}
    assert store.refusal("d2", "t-old", "f1") is None
