"""Jobs: create, schedule, run, pause, resume, cancel; their retained documents and events.

A job is SCHEDULED until its time comes (now, ``at``, or the next daily time), then IN_PROGRESS:
its target is resolved (a query against the index, or the listed devices) and stored as one
execution per device, each with a transaction derived from the job, the run and the device. Then
COMPLETED, or CANCELED / ABORTED. A daily job goes back to SCHEDULED after each completed run (an
aborted or canceled one stops for good). Everything is in the fleet store first, so a restarted
service picks each job up where it was (:meth:`JobManager.load`) and sends the executions that were
in flight again under their transactions, which the bridges answer from their stores.

Documents are retained on ``{base}/fleet/jobs/{id}`` when a job changes (at most every
:data:`PUBLISH_INTERVAL` while it runs, at once on a change of status), transitions go to
``{base}/fleet/jobs/{id}/event``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from contracts.fleet import DailySchedule, ExecutionStatus, FleetTopics, JobSpec, JobStatus, SetOperation
from twin.fleet.clock import Clock, iso
from twin.fleet.commands import CommandSender, device_digest
from twin.fleet.index import FleetIndex, device_key
from twin.fleet.runner import JobRun
from twin.fleet.schedule import first_run, next_daily
from twin.fleet.search import Search
from twin.fleet.store import ExecutionRow, FleetStore, JobRow
from twin.jsonenc import dumps

__all__ = ["PUBLISH_INTERVAL", "Job", "JobError", "JobManager", "execution_transaction"]

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 0.25
Send = Callable[[str, bytes, bool], None]


class JobError(ValueError):
    """A job request that cannot be carried out (unknown job, wrong state)."""


def execution_transaction(job_id: str, run: int, vendor: str, device: str) -> str:
    """The same for the same job, run and device: a restarted service sends the same transaction."""
    return f"fleet:{job_id}:{run}:{device_digest(vendor, device)}"


@dataclass
class Job:
    row: JobRow
    spec: JobSpec
    run: JobRun | None = None
    counts: Counter[str] = field(default_factory=Counter)
    wait: anyio.CancelScope | None = None
    resolved: int = 0

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.row.status)


class JobManager:
    def __init__(
        self,
        *,
        store: FleetStore,
        index: FleetIndex,
        search: Search,
        sender: CommandSender,
        topics: FleetTopics,
        send: Send,
        clock: Clock,
        ready: anyio.Event,
    ) -> None:
        self.store = store
        self.index = index
        self.search = search
        self.sender = sender
        self.topics = topics
        self.send = send
        self.clock = clock
        #: set once the index has loaded the retained topics (no job starts before)
        self.ready = ready
        self.jobs: dict[str, Job] = {}
        self._dirty: dict[str, None] = {}
        self._tg: TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self) -> None:
        for row in self.store.jobs():
            job = Job(row=row, spec=JobSpec.model_validate(row.spec))
            if row.run:
                job.counts = Counter(e.status for e in self.store.executions(row.id, row.run))
                job.resolved = row.total
            self.jobs[row.id] = job

    async def run(self, tg: TaskGroup) -> None:
        self._tg = tg
        for job in self.jobs.values():
            if not job.status.is_final:
                tg.start_soon(self._drive, job)
        while True:
            await anyio.sleep(PUBLISH_INTERVAL)
            for job_id in list(self._dirty):
                self.publish(self.jobs[job_id])

    def republish(self) -> None:
        for job in self.jobs.values():
            self.publish(job)

    # -- requests --------------------------------------------------------------------------------
    def create(self, spec: JobSpec, *, request_tx: str | None) -> Job:
        if request_tx is not None and (known := self.store.job_by_request(request_tx)) is not None:
            return self.jobs[known]  # the same request again: the same job, not a second one
        now = time.time()
        next_at = first_run(spec.schedule, self.clock.now())
        row = JobRow(
            id=f"job-{uuid.uuid4().hex[:12]}",
            request_tx=request_tx,
            spec=spec.model_dump(mode="json", exclude={"transaction", "dry_run"}),
            status=JobStatus.SCHEDULED.value,
            paused=False,
            run=0,
            total=0,
            created_at=now,
            started_at=None,
            ended_at=None,
            next_run_at=next_at,
            reason=None,
            updated_at=now,
        )
        self.store.insert_job(row)
        job = self.jobs[row.id] = Job(row=row, spec=spec)
        self._event(job, None, JobStatus.SCHEDULED.value)
        self.publish(job)
        if self._tg is not None:
            self._tg.start_soon(self._drive, job)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}")
        return job

    def pause(self, job_id: str, paused: bool) -> Job:
        job = self.get(job_id)
        if job.status.is_final:
            raise JobError(f"{job_id} is {job.status.value}: it can no longer be {'paused' if paused else 'resumed'}")
        if job.row.paused != paused:
            job.row.paused = paused
            self.store.save_job(job.row)
            if job.run is not None:
                job.run.pause(paused)
            self._event(job, job.row.status, job.row.status, reason="paused" if paused else "resumed")
        self.publish(job)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status.is_final:
            raise JobError(f"{job_id} is already {job.status.value}")
        self._end(job, JobStatus.CANCELED, "canceled by request")
        return job

    def dry_run(self, spec: JobSpec) -> dict[str, Any]:
        targets = self._resolve(spec)
        op = spec.operation
        skipped = 0
        if isinstance(op, SetOperation):
            for vendor, device in targets:
                rec = self.index.records.get(device_key(vendor, device))
                current = None if rec is None else rec.lock if op.field == "lock" else rec.values.get(op.field)
                skipped += rec is not None and not rec.pending and current == op.value
        return {"total": len(targets), "devices": [f"{v}/{d}" for v, d in targets[:1000]], "skipped": skipped}

    # -- running ---------------------------------------------------------------------------------
    async def _drive(self, job: Job) -> None:
        try:
            while not job.status.is_final:
                if job.status == JobStatus.SCHEDULED:
                    with anyio.CancelScope() as scope:
                        job.wait = scope
                        await self.clock.sleep_until(job.row.next_run_at or 0.0)
                    job.wait = None
                    if job.status.is_final:
                        return
                    await self.ready.wait()
                    self._start_run(job)
                else:
                    await self.ready.wait()
                    self._attach_run(job)
                assert job.run is not None
                await job.run.dispatch()
                self._run_ended(job)
        except Exception:
            log.exception("job %s failed", job.row.id)
            self._end(job, JobStatus.ABORTED, "internal error (see the service's log)")

    def _resolve(self, spec: JobSpec) -> list[tuple[str, str]]:
        if spec.target.query is not None:
            keys = sorted(self.search.matches(spec.target.query))
        else:
            keys = list(dict.fromkeys(spec.target.devices or ()))
        return [(k.split("/", 1)[0], k.split("/", 1)[1]) for k in keys]

    def _start_run(self, job: Job) -> None:
        row = job.row
        row.run += 1
        targets = self._resolve(job.spec)
        executions = [
            ExecutionRow(
                job_id=row.id,
                run=row.run,
                seq=i,
                vendor=v,
                device=d,
                status=ExecutionStatus.QUEUED.value,
                txn=execution_transaction(row.id, row.run, v, d),
            )
            for i, (v, d) in enumerate(targets)
        ]
        before = row.status
        row.status, row.total, row.started_at, row.ended_at = (
            JobStatus.IN_PROGRESS.value,
            len(targets),
            time.time(),
            None,
        )
        row.next_run_at = None
        with self.store.transaction():
            self.store.insert_executions(executions)
            self.store.save_job(row)
        job.resolved = len(targets)
        job.run = self._new_run(job, executions)
        job.counts = job.run.counts
        self._event(job, before, row.status)
        self.publish(job)

    def _attach_run(self, job: Job) -> None:
        """A job that was IN_PROGRESS when the previous process stopped."""
        executions = self.store.executions(job.row.id, job.row.run)
        job.run = self._new_run(job, executions)
        job.counts = job.run.counts
        log.info(
            "resuming %s run %d: %d executions, %d in flight",
            job.row.id,
            job.row.run,
            len(executions),
            job.counts[ExecutionStatus.IN_PROGRESS],
        )

    def _new_run(self, job: Job, executions: list[ExecutionRow]) -> JobRun:
        run = JobRun(
            job_id=job.row.id,
            run=job.row.run,
            spec=job.spec,
            executions=executions,
            store=self.store,
            index=self.index,
            sender=self.sender,
            on_execution=lambda row, before: self._execution_event(job, row, before),
            on_change=lambda: self._touch(job),
        )
        run.pause(job.row.paused)
        return run

    def _run_ended(self, job: Job) -> None:
        run = job.run
        assert run is not None
        if run.aborted is not None and not job.status.is_final:
            self._end(job, JobStatus.ABORTED, run.aborted)
        elif not job.status.is_final:
            if isinstance(job.spec.schedule, DailySchedule):
                job.row.status = JobStatus.SCHEDULED.value
                job.row.next_run_at = next_daily(job.spec.schedule, self.clock.now())
                job.row.ended_at = time.time()
                self.store.save_job(job.row)
                self._event(job, JobStatus.IN_PROGRESS.value, job.row.status, reason=f"run {job.row.run} completed")
            else:
                self._end(job, JobStatus.COMPLETED, None)
        self.store.flush()
        self.publish(job)

    def _end(self, job: Job, status: JobStatus, reason: str | None) -> None:
        before = job.row.status
        job.row.status, job.row.reason, job.row.ended_at = status.value, reason, time.time()
        job.row.next_run_at = None
        self.store.save_job(job.row)
        if job.wait is not None:
            job.wait.cancel()
        if job.run is not None:
            job.run.stop()
        self._event(job, before, status.value, reason=reason)
        self.publish(job)

    # -- documents and events --------------------------------------------------------------------
    def _touch(self, job: Job) -> None:
        self._dirty[job.row.id] = None

    def publish(self, job: Job) -> None:
        self._dirty.pop(job.row.id, None)
        self.send(self.topics.job(job.row.id), dumps(self.document(job)), True)

    def document(self, job: Job) -> dict[str, Any]:
        row, spec = job.row, job.spec
        run = job.run
        counts = {s.value: max(0, job.counts.get(s.value, 0)) for s in ExecutionStatus}
        rate = run.rate() if run is not None and job.status == JobStatus.IN_PROGRESS else 0.0
        estimated = None
        if job.status == JobStatus.IN_PROGRESS and run is not None and rate > 0:
            estimated = iso(time.time() + run.remaining() / rate)
        return {
            "id": row.id,
            "name": spec.name,
            "status": row.status,
            "paused": row.paused,
            "operation": spec.operation.model_dump(mode="json"),
            "target": {"query": spec.target.query, "devices": job.resolved},
            "rollout": spec.rollout.model_dump(mode="json"),
            "abort": None if spec.abort is None else spec.abort.model_dump(mode="json"),
            "execution_timeout": spec.execution_timeout,
            "schedule": None if spec.schedule is None else spec.schedule.model_dump(mode="json"),
            "total": row.total,
            "counts": counts,
            "rate": round(rate, 3),
            "estimated_end": estimated,
            "created_at": iso(row.created_at),
            "started_at": None if row.started_at is None else iso(row.started_at),
            "ended_at": None if row.ended_at is None else iso(row.ended_at),
            "updated_at": iso(time.time()),
            "run": row.run,
            "next_run_at": None if row.next_run_at is None else iso(row.next_run_at),
            "reason": row.reason,
        }

    def _event(self, job: Job, before: str | None, after: str, *, reason: str | None = None) -> None:
        doc = {
            "type": "job",
            "at": iso(time.time()),
            "job_id": job.row.id,
            "run": job.row.run,
            "from": before,
            "to": after,
            "reason": reason,
        }
        self.send(self.topics.job_event(job.row.id), dumps(doc), False)

    def _execution_event(self, job: Job, row: ExecutionRow, before: str) -> None:
        doc = {
            "type": "execution",
            "at": iso(time.time()),
            "job_id": row.job_id,
            "run": row.run,
            "from": before,
            "to": row.status,
            "vendor": row.vendor,
            "device": row.device,
            "transaction": row.txn,
            "error": row.error,
        }
        self.send(self.topics.job_event(row.job_id), dumps(doc), False)
