"""Jobs against real bridges (the fake vendor) over a real mosquitto: rollout rate, abort, cancel,
pause, SKIPPED, dry run, idempotent creation, and schedules on an injected clock."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from contracts.errors import ErrorCode
from contracts.fleet import JobDocument, JobEvent
from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.adapter import VendorError
from twin.fleet.clock import ManualClock
from twin.fleet.runner import BURST

from .helpers import FINAL_JOB, cli, eventually, fake_bridge, running_fleet

pytestmark = pytest.mark.anyio

UNLOCK = {"kind": "set", "field": "lock", "value": "UNLOCKED"}
LOCK = {"kind": "set", "field": "lock", "value": "LOCKED"}


def devices(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def ended(doc: dict[str, Any]) -> bool:
    return doc["status"] in FINAL_JOB


async def create(probe: Any, spec: dict[str, Any]) -> dict[str, Any]:
    answer = await probe.request("job_create", spec)
    assert answer["status"] == "succeeded", answer
    doc: dict[str, Any] = answer["data"]
    JobDocument.model_validate(doc)
    return doc


async def test_job_over_200_devices_keeps_its_rate(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fj-{uuid.uuid4().hex[:8]}"
    ids = devices(200)
    adapter = FakeAdapter(settings=FakeSettings(devices=ids))
    rate = 100.0
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids, adapter=adapter),
        running_fleet(mqtt_broker, tmp_path / "f", base) as (service, probe),
    ):
        job = await create(
            probe,
            {
                "name": "unlock all",
                "target": {"query": "vendor=fake"},
                "operation": UNLOCK,
                "rollout": {"max_per_second": rate, "max_in_flight": 20},
            },
        )
        done = await probe.wait_job(job["id"], ended, timeout=60)
        JobDocument.model_validate(done)
        assert done["status"] == "COMPLETED" and done["total"] == 200
        assert done["counts"]["SUCCEEDED"] == 200, done["counts"]
        assert Counter(d for d, _ in adapter.calls) == Counter(ids)  # one vendor call each
        sent = sorted(e.issued_at for e in service.store.executions(job["id"], 1) if e.issued_at is not None)
        assert len(sent) == 200
        # never more than the rate in any second (GCRA: plus its burst tolerance and the first send)
        busiest = max(sum(1 for t in sent[i:] if t < start + 1.0) for i, start in enumerate(sent))
        assert busiest <= rate * (1 + BURST) + 1, busiest
        span = sent[-1] - sent[0]
        assert span >= (len(sent) - 1) / rate - BURST - 0.01
        print(
            f"200 executions sent in {span:.2f}s: {(len(sent) - 1) / span:.1f}/s at a limit of {rate:g}/s; "
            f"busiest second {busiest}"
        )
        events = probe.events(f"{base}/fleet/jobs/{job['id']}/event")
        for event in events:
            JobEvent.model_validate(event)
        finals = Counter(e["device"] for e in events if e["type"] == "execution" and e["to"] == "SUCCEEDED")
        assert finals == Counter(ids)
        assert [e["to"] for e in events if e["type"] == "job"] == ["SCHEDULED", "IN_PROGRESS", "COMPLETED"]


async def test_job_aborts_when_failures_pass_the_threshold(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fj-{uuid.uuid4().hex[:8]}"
    ids = devices(40)
    adapter = FakeAdapter(settings=FakeSettings(devices=ids))
    for device in ids[:10]:  # the first ten refuse, as a vendor's policy would
        adapter.locks[device].errors.append(VendorError(ErrorCode.POLICY_DENIED, "not here", retryable=False))
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids, adapter=adapter),
        running_fleet(mqtt_broker, tmp_path / "f", base) as (service, probe),
    ):
        job = await create(
            probe,
            {
                "target": {"devices": [f"fake/{d}" for d in ids]},
                "operation": UNLOCK,
                "rollout": {"max_per_second": 50, "max_in_flight": 2},
                "abort": {"failure_percent": 20, "min_executions": 5},
            },
        )
        done = await probe.wait_job(job["id"], ended)
        assert done["status"] == "ABORTED", done
        assert "more than 20 %" in done["reason"]
        counts = done["counts"]
        ran = counts["FAILED"] + counts["SUCCEEDED"]
        assert counts["FAILED"] >= 5 and ran < 40
        assert counts["CANCELED"] == 40 - ran and counts["QUEUED"] == counts["IN_PROGRESS"] == 0
        assert len(adapter.calls) == ran  # the canceled ones were never sent
        failed = [e for e in service.store.executions(job["id"], 1) if e.status == "FAILED"]
        assert failed[0].error is not None and failed[0].error["code"] == "POLICY_DENIED"


async def test_cancel_and_pause(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fj-{uuid.uuid4().hex[:8]}"
    ids = devices(60)
    adapter = FakeAdapter(settings=FakeSettings(devices=ids))
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids, adapter=adapter),
        running_fleet(mqtt_broker, tmp_path / "f", base) as (service, probe),
    ):
        spec = {
            "target": {"query": "vendor=fake"},
            "operation": UNLOCK,
            "rollout": {"max_per_second": 20, "max_in_flight": 5},
        }
        job = await create(probe, spec)
        await probe.wait_job(job["id"], lambda d: d["counts"]["SUCCEEDED"] >= 3)
        paused = await probe.request("job_pause", {"job_id": job["id"]})
        assert paused["status"] == "succeeded" and paused["data"]["paused"] is True
        paused_at = datetime.fromisoformat(paused["data"]["updated_at"]).timestamp()
        await probe.wait_job(job["id"], lambda d: d["paused"] and d["counts"]["IN_PROGRESS"] == 0)
        resumed_at = datetime.now().timestamp()
        assert (await probe.request("job_resume", {"job_id": job["id"]}))["data"]["paused"] is False
        await probe.wait_job(job["id"], lambda d: d["counts"]["SUCCEEDED"] >= 15)
        canceled = await probe.request("job_cancel", {"job_id": job["id"]})
        assert canceled["data"]["status"] == "CANCELED"
        done = await probe.wait_job(job["id"], lambda d: d["status"] == "CANCELED" and d["counts"]["IN_PROGRESS"] == 0)
        counts = done["counts"]
        assert counts["CANCELED"] > 0 and counts["SUCCEEDED"] + counts["CANCELED"] == 60, counts
        assert len(adapter.calls) == counts["SUCCEEDED"]
        # nothing was sent while the job was paused
        sent = [e.issued_at for e in service.store.executions(job["id"], 1) if e.issued_at is not None]
        assert all(t <= paused_at or t >= resumed_at for t in sent)
        assert any(t >= resumed_at for t in sent)
        again = await probe.request("job_resume", {"job_id": job["id"]})
        assert again["status"] == "rejected" and "CANCELED" in again["error"]["message"]


async def test_skip_dry_run_and_idempotent_create(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fj-{uuid.uuid4().hex[:8]}"
    ids = devices(6)
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids) as bridge,
        running_fleet(mqtt_broker, tmp_path / "f", base) as (_, probe),
    ):
        assert (await bridge.set("d000", {"lock": "UNLOCKED"}))["status"] == "succeeded"

        async def locked() -> bool:  # polled: every lock state is known
            return bool((await probe.request("query", {"q": "lock=LOCKED"}))["data"]["total"] == 5)

        await eventually(locked)
        spec = {"target": {"query": "vendor=fake"}, "operation": LOCK, "rollout": {"max_per_second": 100}}
        dry = await probe.request("job_create", {**spec, "dry_run": True})
        assert dry["data"] == {"total": 6, "devices": [f"fake/{d}" for d in ids], "skipped": 5}
        assert (await probe.request("job_list"))["data"]["jobs"] == []
        request = {"transaction": "create-once", **spec}
        first = await probe.request("job_create", raw=__import__("json").dumps(request).encode())
        job_id = first["data"]["id"]
        done = await probe.wait_job(job_id, ended)
        assert done["counts"]["SKIPPED"] == 5 and done["counts"]["SUCCEEDED"] == 1
        again = await probe.request("job_create", raw=__import__("json").dumps(request).encode())
        assert again["data"]["id"] == job_id  # the same request again is the same job
        assert len((await probe.request("job_list"))["data"]["jobs"]) == 1

        # the command line: a dry run, then a job followed to its end with a progress bar
        dry_cli = await anyio.to_thread.run_sync(
            lambda: cli(mqtt_broker, base, "job", "create", "--query", "vendor=fake id=d00*", "--unlock", "--dry-run")
        )
        assert dry_cli.returncode == 0, dry_cli.stderr
        assert dry_cli.stdout.split() == [f"fake/{d}" for d in ids] and "nothing created" in dry_cli.stderr
        waited = await anyio.to_thread.run_sync(
            lambda: cli(
                mqtt_broker,
                base,
                "job",
                "create",
                "--devices",
                "fake/d001,fake/d002",
                "--unlock",
                "--rate",
                "50",
                "--wait",
            )
        )
        assert waited.returncode == 0, waited.stderr
        assert "[##############################] 2/2 COMPLETED" in waited.stderr and "SUCCEEDED 2" in waited.stderr
        listed = await anyio.to_thread.run_sync(lambda: cli(mqtt_broker, base, "job", "list"))
        assert listed.returncode == 0 and waited.stdout.strip() in listed.stdout


async def test_schedules_on_an_injected_clock(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fj-{uuid.uuid4().hex[:8]}"
    ids = devices(3)
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime.now(berlin)
    clock = ManualClock(now.replace(hour=22, minute=59, second=30).timestamp())  # today, 22:59:30 in Berlin
    adapter = FakeAdapter(settings=FakeSettings(devices=ids))
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids, adapter=adapter),
        running_fleet(mqtt_broker, tmp_path / "f", base, clock=clock) as (_, probe),
    ):
        at = await create(
            probe,
            {
                "target": {"devices": ["fake/d000"]},
                "operation": UNLOCK,
                "schedule": {"at": datetime.fromtimestamp(clock.now() + 3600, berlin).isoformat()},
            },
        )
        daily = await create(
            probe,
            {
                "target": {"query": "vendor=fake"},
                "operation": LOCK,
                "schedule": {"daily": "23:00", "tz": "Europe/Berlin"},
            },
        )
        assert at["status"] == daily["status"] == "SCHEDULED"
        tonight = datetime.fromisoformat(daily["next_run_at"]).astimezone(berlin)
        assert (tonight.date(), tonight.hour, tonight.minute) == (now.date(), 23, 0)
        assert adapter.calls == []

        clock.advance(31)  # 23:00:01: the daily job runs, the other one waits
        first = await probe.wait_job(daily["id"], lambda d: d["run"] == 1 and d["status"] == "SCHEDULED")
        assert first["total"] == 3 and first["counts"]["SUCCEEDED"] + first["counts"]["SKIPPED"] == 3
        tomorrow = datetime.fromisoformat(first["next_run_at"]).astimezone(berlin)
        assert (tomorrow.hour, tomorrow.minute, (tomorrow.date() - now.date()).days) == (23, 0, 1)
        assert probe.job(at["id"])["status"] == "SCHEDULED"  # type: ignore[index]
        assert ("d000", "unlock") not in adapter.calls

        clock.advance(3600)
        done = await probe.wait_job(at["id"], ended)
        assert done["status"] == "COMPLETED" and done["counts"]["SUCCEEDED"] == 1
        assert adapter.calls.count(("d000", "unlock")) == 1
        transactions = {
            e["transaction"] for e in probe.events(f"{base}/fleet/jobs/{daily['id']}/event") if e["type"] == "execution"
        }
        assert all(t.startswith(f"fleet:{daily['id']}:1:") for t in transactions)
