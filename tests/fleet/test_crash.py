"""SIGKILL of the fleet service in the middle of a job: the restarted process resumes it from its
store; every device gets exactly one command and one outcome, and no second vendor call (the
bridge answers the transactions sent again from its own store)."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.fake_adapter import FakeAdapter, FakeSettings

from .helpers import FINAL_JOB, FleetProbe, FleetProcess, fake_bridge

pytestmark = pytest.mark.anyio


async def test_sigkill_mid_job_resumes_without_a_second_vendor_call(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fk-{uuid.uuid4().hex[:8]}"
    ids = [f"k{i:03d}" for i in range(120)]
    adapter = FakeAdapter(settings=FakeSettings(devices=ids))
    for lock in adapter.locks.values():
        lock.bolt_seconds = 0.4  # commands stay in flight a while: some are when the service dies
    fleet = FleetProcess(mqtt_broker, tmp_path / "fleet", base, tmp_path / "fleet.log")
    probe = FleetProbe(mqtt_broker, base)
    async with fake_bridge(mqtt_broker, tmp_path / "bridge", base, ids, adapter=adapter) as bridge, probe.running():
        fleet.start()
        try:
            await probe.wait_for(lambda: probe.retained.get(f"{base}/fleet/state") == b"online", timeout=30)
            answer = await probe.request(
                "job_create",
                {
                    "target": {"query": "vendor=fake"},
                    "operation": {"kind": "set", "field": "lock", "value": "UNLOCKED"},
                    "rollout": {"max_per_second": 60, "max_in_flight": 20},
                    "execution_timeout": 30,
                },
                timeout=30,
            )
            assert answer["status"] == "succeeded", answer
            job_id = answer["data"]["id"]
            mid = await probe.wait_job(job_id, lambda d: d["counts"]["SUCCEEDED"] >= 30 and d["counts"]["IN_PROGRESS"])
            fleet.kill()
            assert mid["status"] == "IN_PROGRESS"
            calls_at_kill = len(adapter.calls)
            fleet.start()
            done = await probe.wait_job(job_id, lambda d: d["status"] in FINAL_JOB, timeout=60)
        finally:
            fleet.stop()
        assert done["status"] == "COMPLETED" and done["counts"]["SUCCEEDED"] == len(ids), done["counts"]
        assert calls_at_kill < len(ids)  # it really died mid-job
        assert Counter(d for d, _ in adapter.calls) == Counter(ids)  # exactly one vendor call per device
        assert all(lock.lock_calls == 1 for lock in adapter.locks.values())

    # the fleet's store: one execution per device, each with one final status
    with sqlite3.connect(tmp_path / "fleet" / "fleet" / "fleet.sqlite") as db:
        rows = db.execute("SELECT device, status, txn FROM executions WHERE job_id=?", (job_id,)).fetchall()
    assert sorted(r[0] for r in rows) == ids and {r[1] for r in rows} == {"SUCCEEDED"}
    # the bridge's store: one command per transaction, and it succeeded
    with sqlite3.connect(tmp_path / "bridge" / "fake" / "twins.sqlite") as db:
        commands = db.execute("SELECT txn, status FROM commands WHERE txn LIKE 'fleet:%'").fetchall()
    assert Counter(t for t, _ in commands) == Counter(r[2] for r in rows)
    assert {s for _, s in commands} == {"succeeded"}
    replays = [r for r in bridge.messages if "/response/" in r[0]]
    assert not replays  # answers went to the fleet's own response topic, never to the devices' topics
