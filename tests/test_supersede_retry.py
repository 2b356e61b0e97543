"""A command superseded while its worker waits out a retry backoff is never sent again (twin.engine:
the worker, intake and outcome share the open command objects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import ErrorCode
from tests.fake_adapter import FakeAdapter
from twin.adapter import VendorError
from twin.store import Store
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


async def test_command_superseded_during_retry_backoff_is_not_sent_again(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    # The first lock call fails with a retryable error asking for a 60 s pause: time to supersede
    # it, and longer than the test may take, so the newer command cannot wait out that pause.
    busy = VendorError(ErrorCode.VENDOR_UNAVAILABLE, "try again later", retry_after=60.0)
    assert busy.info.retryable
    adapter.locks["d1"].errors = [busy]
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "first", "expires_in": 30})

        def back_to_accepted() -> bool:
            return any(
                e["data"]["transaction"] == "first" and e["data"]["from"] == "sent" and e["data"]["to"] == "accepted"
                for e in h.events("d1", "command")
            )

        await h.wait_for(back_to_accepted)  # the worker now sleeps in the backoff
        assert adapter.calls == [("d1", "unlock")]
        assert adapter.locks["d1"].errors == []  # consumed by that call
        await h.publish(h.topic("d1", "set"), {"lock": "LOCKED", "transaction": "second", "expires_in": 30})
        first = await h.final("d1", "first")
        assert first["status"] == "superseded"
        assert first["error"] is None  # the retried 503 is not its outcome
        assert first["data"]["superseded_by_transaction"] == "second"
        await h.wait_for(lambda: len(adapter.calls) >= 2)
        assert adapter.calls[1] == ("d1", "lock"), "the superseded command was sent again"
        second = await h.final("d1", "second")
        assert second["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock"), ("d1", "lock")]  # "first" was never sent again
        answers = [r["status"] for r in h.responses("d1") if r["transaction"] == "first"]
        assert answers == ["accepted", "superseded"]  # exactly one final answer
        steps = [(e["data"]["from"], e["data"]["to"]) for e in h.events("d1", "command")]
        first_steps = [
            (e["data"]["from"], e["data"]["to"])
            for e in h.events("d1", "command")
            if e["data"]["transaction"] == "first"
        ]
        assert first_steps == [
            (None, "accepted"),
            ("accepted", "sent"),
            ("sent", "accepted"),
            ("accepted", "superseded"),
        ], steps
        twin = await h.wait_retained("d1", "twin", lambda t: t["command"]["transaction"] == "second")
        assert twin["command"]["status"] == "succeeded" and twin["reported"]["lock"] == "LOCKED"
        await h.stop_bridge()

    store = Store(path=tmp_path / "fake" / "twins.sqlite")
    store.open()
    try:
        assert store.open_commands() == []
        record = store.command_by_transaction("d1", "first")
        assert record is not None and record.status.value == "superseded" and record.attempts == 1
        sends = [e for e in store.journal_entries("d1") if e["entry"] == "command.sent" and e["transaction"] == "first"]
        assert len(sends) == 1
    finally:
        store.close()


async def test_unanswered_call_is_replaced_as_not_confirmed_not_superseded(mqtt_broker: str, tmp_path: Path) -> None:
    """A call that got no answer may have reached the vendor: "superseded" would promise it did not."""
    adapter = FakeAdapter()
    lost = VendorError(ErrorCode.DEVICE_TIMEOUT, "no answer", retry_after=60.0, maybe_executed=True)
    assert lost.info.retryable
    adapter.locks["d1"].errors = [lost]
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "first", "expires_in": 30})
        await h.wait_for(
            lambda: any(
                e["data"]["transaction"] == "first" and e["data"]["to"] == "accepted" and e["data"]["from"] == "sent"
                for e in h.events("d1", "command")
            )
        )
        await h.publish(h.topic("d1", "set"), {"lock": "LOCKED", "transaction": "second", "expires_in": 30})
        first = await h.final("d1", "first")
        assert first["status"] == "failed" and first["error"]["code"] == "NOT_CONFIRMED", first
        assert first["data"]["superseded_by_transaction"] == "second"
        second = await h.final("d1", "second")
        assert second["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock"), ("d1", "lock")]
        answers = [r["status"] for r in h.responses("d1") if r["transaction"] == "first"]
        assert answers == ["accepted", "failed"]
