"""One run of a job: its executions dispatched under the rollout limits, their outcomes recorded.

The dispatcher takes queued executions in order. A device already in the target state when its turn
comes is SKIPPED (nothing sent). Otherwise it waits for a free slot of ``max_in_flight``, for the
pacer (at most ``max_per_second``), then marks the execution IN_PROGRESS in the store and sends its
command. Outcomes arrive through the :class:`~twin.fleet.commands.CommandSender`. After each, the
abort criteria are checked. Pausing stops the dispatcher between two sends; cancelling or aborting
ends queued executions as CANCELED, while those in flight keep their real outcome.

The pacer is GCRA (the generic cell rate algorithm, as in ATM and most API gateways): a send is due
``1/R`` after the one before, with ``BURST`` seconds of tolerance, so a timer that wakes late sends
what fell due meanwhile but no window of one second holds more than ``R + R * BURST + 1`` sends.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

import anyio

from contracts.fleet import ActionOperation, ExecutionStatus, JobSpec, SetOperation
from twin.fleet.commands import CommandSender, FleetCommand, Outcome
from twin.fleet.index import FleetIndex, device_key
from twin.fleet.store import ExecutionRow, FleetStore

__all__ = ["BURST", "JobRun", "Pacer", "outcome_status"]

log = logging.getLogger(__name__)

BURST = 0.02
#: seconds of finished executions the rate is measured over
RATE_WINDOW = 10.0


class Pacer:
    """At most ``rate`` events a second (GCRA with ``burst`` seconds of tolerance)."""

    def __init__(self, rate: float, *, burst: float = BURST) -> None:
        self.interval = 1.0 / rate
        self.tolerance = max(0.0, burst)
        self._tat: float | None = None  # the theoretical arrival time of the next event

    def take(self) -> bool:
        """One event now, if the rate allows it (never waits)."""
        now = anyio.current_time()
        tat = now if self._tat is None else max(self._tat, now)
        if tat - self.tolerance - now > 0:
            return False
        self._tat = tat + self.interval
        return True

    async def wait(self) -> None:
        while not self.take():
            assert self._tat is not None
            await anyio.sleep(max(0.0, self._tat - self.tolerance - anyio.current_time()))


def outcome_status(outcome: Outcome) -> ExecutionStatus:
    """An execution's final status from the bridge's final answer."""
    code = (outcome.error or {}).get("code")
    return {
        "succeeded": ExecutionStatus.SUCCEEDED,
        "failed": ExecutionStatus.FAILED,
        "expired": ExecutionStatus.TIMED_OUT,
        "timeout": ExecutionStatus.TIMED_OUT,
        # a newer command of the same field replaced it before it was sent
        "superseded": ExecutionStatus.CANCELED,
    }.get(outcome.status, ExecutionStatus.TIMED_OUT if code == "EXPIRED" else ExecutionStatus.REJECTED)


class JobRun:
    def __init__(
        self,
        *,
        job_id: str,
        run: int,
        spec: JobSpec,
        executions: list[ExecutionRow],
        store: FleetStore,
        index: FleetIndex,
        sender: CommandSender,
        on_execution: Callable[[ExecutionRow, str], None],
        on_change: Callable[[], None],
    ) -> None:
        self.job_id = job_id
        self.run = run
        self.spec = spec
        self.executions = executions
        self.store = store
        self.index = index
        self.sender = sender
        #: (execution, its status before) after every transition
        self.on_execution = on_execution
        #: counts changed (the job's document is due)
        self.on_change = on_change
        self.counts: Counter[str] = Counter(e.status for e in executions)
        self.queue: deque[ExecutionRow] = deque(e for e in executions if e.status == ExecutionStatus.QUEUED)
        self.in_flight: dict[str, ExecutionRow] = {}
        self.paused = False
        #: set when the run must stop dispatching for good (canceled, aborted)
        self.stopped = False
        self.aborted: str | None = None
        self.started = time.monotonic()
        self._finished_at: deque[float] = deque()
        self._changed = anyio.Event()
        self.done = anyio.Event()

    # -- the dispatcher --------------------------------------------------------------------------
    async def dispatch(self) -> None:
        """Send what is queued (after sending again what a previous process left in flight)."""
        for row in self.executions:
            if row.status == ExecutionStatus.IN_PROGRESS:
                self._send(row, again=True)
        pacer = Pacer(self.spec.rollout.max_per_second)
        limit = self.spec.rollout.max_in_flight
        while self.queue and not self.stopped:
            if self.paused or len(self.in_flight) >= limit:
                await self._wait_change()
                continue
            row = self.queue[0]
            if self._already_done(row):
                self.queue.popleft()
                self._finish(row, ExecutionStatus.SKIPPED, None)
                continue
            await pacer.wait()
            if self.paused or self.stopped or len(self.in_flight) >= limit:
                continue  # the same execution waits for its turn again
            # what else the pacer lets go now (a late wake-up) is marked in the same commit
            batch = [self.queue.popleft()]
            while (
                self.queue
                and len(self.in_flight) + len(batch) < limit
                and not self._already_done(self.queue[0])
                and pacer.take()
            ):
                batch.append(self.queue.popleft())
            self._send_batch(batch)
        self._check_done()
        await self.done.wait()

    async def _wait_change(self) -> None:
        self._changed = anyio.Event()
        await self._changed.wait()

    def _poke(self) -> None:
        self._changed.set()

    def _already_done(self, row: ExecutionRow) -> bool:
        op = self.spec.operation
        rec = self.index.records.get(device_key(row.vendor, row.device))
        if not isinstance(op, SetOperation) or rec is None or rec.pending:
            return False
        current = rec.lock if op.field == "lock" else rec.values.get(op.field)
        return bool(current == op.value)

    def _command(self, row: ExecutionRow) -> FleetCommand:
        op = self.spec.operation
        kind: Literal["set", "action"]
        if isinstance(op, ActionOperation):
            kind, name, value = "action", op.action, op.arguments
        else:
            kind, name, value = "set", op.field, op.value
        return FleetCommand(
            vendor=row.vendor,
            device=row.device,
            kind=kind,
            name=name,
            value=value,
            transaction=row.txn,
            issued_at=row.issued_at or time.time(),
            timeout=self.spec.execution_timeout,
            on_final=self._answered,
        )

    def _send_batch(self, rows: list[ExecutionRow]) -> None:
        now = time.time()
        for row in rows:
            row.status, row.issued_at = ExecutionStatus.IN_PROGRESS, now
        self.store.mark_sent(rows)  # durable before they go out
        for row in rows:
            self._count(ExecutionStatus.QUEUED, ExecutionStatus.IN_PROGRESS)
            self.on_execution(row, ExecutionStatus.QUEUED)
            self._send(row)

    def _send(self, row: ExecutionRow, *, again: bool = False) -> None:
        self.in_flight[row.txn] = row
        self.sender.send(self._command(row), again=again)

    # -- outcomes --------------------------------------------------------------------------------
    def _answered(self, cmd: FleetCommand, outcome: Outcome) -> None:
        row = self.in_flight.pop(cmd.transaction, None)
        if row is None:
            return
        self._finish(row, outcome_status(outcome), outcome.error)

    def _finish(self, row: ExecutionRow, status: ExecutionStatus, error: dict[str, Any] | None) -> None:
        before = row.status
        row.status, row.error, row.ended_at = status, error, time.time()
        self.store.finish_later(row)
        self._count(before, status)
        self._finished_at.append(time.monotonic())
        self.on_execution(row, before)
        self._check_abort()
        self._check_done()
        self._poke()

    def _count(self, before: str, after: str) -> None:
        self.counts[before] -= 1
        self.counts[after] += 1
        self.on_change()

    def _check_abort(self) -> None:
        abort = self.spec.abort
        if abort is None or self.stopped:
            return
        failures = sum(self.counts[s] for s in ExecutionStatus if s.is_failure)
        ran = failures + self.counts[ExecutionStatus.SUCCEEDED]
        if ran >= abort.min_executions and failures * 100 > abort.failure_percent * ran:
            self.aborted = (
                f"{failures} of {ran} executions failed ({failures * 100 / ran:.1f} %), more than "
                f"{abort.failure_percent:g} % after at least {abort.min_executions}"
            )
            self.stop()

    def _check_done(self) -> None:
        if not self.queue and not self.in_flight and not self.done.is_set():
            self.done.set()

    # -- control ---------------------------------------------------------------------------------
    def pause(self, paused: bool) -> None:
        self.paused = paused
        self._poke()

    def stop(self) -> None:
        """No more sends: queued executions end CANCELED; those in flight keep their outcome."""
        self.stopped = True
        while self.queue:
            self._finish(self.queue.popleft(), ExecutionStatus.CANCELED, None)
        self._check_done()
        self._poke()

    # -- progress --------------------------------------------------------------------------------
    def rate(self) -> float:
        now = time.monotonic()
        while self._finished_at and self._finished_at[0] < now - RATE_WINDOW:
            self._finished_at.popleft()
        span = min(RATE_WINDOW, max(now - self.started, 1e-3))
        return len(self._finished_at) / span

    def remaining(self) -> int:
        return len(self.queue) + len(self.in_flight)
