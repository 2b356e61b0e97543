"""What a captured or misdated observation can do to a twin (issue 16), over a real mosquitto:

- watermarks are durable: an observation older than the last change the store holds changes
  nothing, after a restart too (the guard lived in memory only: a push an hour old, replayed
  after a restart, set a lock back to UNLOCKED);
- a vendor time further ahead of our clock than ``max_observation_ahead`` counts as received now:
  a push dated a year ahead no longer hides every true observation after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from contracts.messages import LockState
from tests.fake_adapter import FakeAdapter
from twin.adapter import ReportedPatch
from twin.reported import merge, watermarks
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def seen(lock: LockState, at: datetime) -> ReportedPatch:
    return ReportedPatch(values={"lock": lock}, observed_at=at)


async def test_an_old_observation_changes_nothing_after_a_restart(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    now = datetime.now(UTC)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        assert adapter.sink is not None
        await adapter.sink.report("d1", seen(LockState.UNLOCKED, now - timedelta(minutes=60)), source="push")
        await adapter.sink.report("d1", seen(LockState.LOCKED, now - timedelta(minutes=1)), source="push")
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")
        await h.stop_bridge()
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            # the hour-old push, replayed: older than the change the store holds
            await adapter.sink.report("d1", seen(LockState.UNLOCKED, now - timedelta(minutes=59)), source="push")
            assert h.runtime is not None
            assert h.runtime.engine.twins["d1"].reported["lock"] == "LOCKED"
            # a true, newer observation still wins
            await adapter.sink.report("d1", seen(LockState.UNLOCKED, now), source="push")
            assert h.runtime.engine.twins["d1"].reported["lock"] == "UNLOCKED"
            tg.cancel_scope.cancel()
    assert not [e for e in h.events("d1", "drift") if e["data"]["to"] == "UNLOCKED" and e["data"]["source"] != "push"]


async def test_a_time_far_ahead_counts_as_received_now(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    now = datetime.now(UTC)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        assert adapter.sink is not None and h.runtime is not None
        await adapter.sink.report("d1", seen(LockState.UNLOCKED, now + timedelta(days=365)), source="push")
        twin = h.runtime.engine.twins["d1"]
        assert twin.reported["lock"] == "UNLOCKED"
        stamped = datetime.fromisoformat(twin.metadata["lock"]["observed_at"])
        assert abs((stamped - datetime.now(UTC)).total_seconds()) < 60  # the receive time, not next year
        # the truth a second later is not hidden until next year: a lock confirms as usual
        final = await h.set("d1", {"lock": "LOCKED"})
        assert final["status"] == "succeeded"


def test_merge_clamps_and_watermarks_come_from_metadata() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
    ahead = seen(LockState.UNLOCKED, datetime(2027, 12, 6, tzinfo=UTC))
    found = merge({"lock": "LOCKED"}, ahead, {}, now=now, source="push", max_ahead=300)
    assert found.clamped == ["lock"] and found.watermark["lock"] == now
    assert found.metadata["lock"]["observed_at"] == datetime.fromtimestamp(now, UTC).isoformat()
    within = seen(LockState.UNLOCKED, datetime.fromtimestamp(now + 60, UTC))
    assert merge({}, within, {}, now=now, source="push", max_ahead=300).clamped == []
    marks = watermarks(
        {
            "lock": {"observed_at": "2026-12-06T11:00:00+00:00", "received_at": "2026-12-06T11:00:02+00:00"},
            "battery": {"observed_at": None, "received_at": "2026-12-06T11:30:00+00:00"},
            "broken": {"observed_at": "yesterday", "received_at": "?"},
        }
    )
    assert marks == {
        "lock": datetime(2026, 12, 6, 11, 0, tzinfo=UTC).timestamp(),
        "battery": datetime(2026, 12, 6, 11, 30, tzinfo=UTC).timestamp(),
    }
