"""Confirming a command the vendor accepted: it is done only once the device reports it.

:meth:`Confirmation.wait` waits for an observation made after the vendor's acknowledgement that
confirms the desired value (or refutes it: a jammed lock): a push may bring it; otherwise the
first read goes out when the lock can have moved (learned per vendor and device by
:mod:`twin.confirmtiming`) and the next ones back off. Reads go through the vendor-call gate at
``CONFIRM`` precedence. What each command shows about the lock's timing is learned, unless one of
its reads failed (then its timing is blurred).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import CommandStatus
from twin.adapter import ReportedPatch, VendorError
from twin.confirmtiming import ConfirmTiming
from twin.devicestate import DeviceState
from twin.gate import Priority, VendorGate
from twin.store import CommandRecord, TwinStore

__all__ = ["Confirmation", "Finish"]

log = logging.getLogger(__name__)

#: ends a command: (command, status, error)
Finish = Callable[[CommandRecord, CommandStatus, ErrorInfo | None], None]


class Confirmation:
    def __init__(
        self,
        *,
        gate: VendorGate,
        timing: ConfirmTiming,
        store: TwinStore,
        read_status: Callable[[str], Awaitable[ReportedPatch]],
        observe: Callable[[str, ReportedPatch], object],
        finish: Finish,
    ) -> None:
        self.gate = gate
        self.timing = timing
        self.store = store
        self._read_status = read_status
        self._observe = observe
        self._finish = finish

    async def wait(self, cmd: CommandRecord, rt: DeviceState) -> None:
        """Return once ``cmd`` ended, or once it reached its expiry unconfirmed (the caller ends it)."""
        device = cmd.device
        acked = cmd.acked_at or time.time()
        first = self.timing.first_wait(device)
        read_at = acked + first
        misses: list[float] = []
        step: float | None = None
        failed = False
        began: list[float] = []  # when each read really went (after its slot)

        async def read() -> ReportedPatch:
            began.append(time.time() - acked)
            return await self._read_status(device)

        while not self._decide_timed(cmd, rt, acked, misses, first, by_read=False, learn=not failed):
            remaining = cmd.expires_at - time.time()
            if remaining <= 0:
                return
            if rt.reported_changed is None:
                rt.reported_changed = anyio.Event()
            event = rt.reported_changed
            with anyio.move_on_after(min(max(0.0, read_at - time.time()), remaining)):
                await event.wait()
            if rt.confirmed_by == cmd.id or event.is_set():
                continue
            began.clear()
            try:
                patch = await self.gate.call(read, operation="read_status", priority=Priority.CONFIRM, device=device)
            except VendorError as exc:
                log.info("confirmation read of %s failed: %s", device, exc.info.code)
                failed = True
                if exc.info.code == ErrorCode.QUOTA_EXHAUSTED:  # no read before the reset: say so now
                    why = f"the vendor accepted it; it cannot be read to confirm it: {exc.info.message}"
                    error = ErrorInfo.of(ErrorCode.NOT_CONFIRMED, why, retry_after=exc.info.retry_after)
                    self._finish(cmd, CommandStatus.FAILED, error)
                    return
            else:
                offset = began[-1] if began else time.time() - acked
                with self.store.transaction():  # the observation and the outcome it decides: one commit
                    self._observe(device, patch)
                    if self._decide_timed(cmd, rt, acked, misses, first, by_read=True, at=offset, learn=not failed):
                        return
                misses.append(offset)
            step = self.timing.step(device, step)
            read_at = time.time() + step

    def _decide_timed(
        self,
        cmd: CommandRecord,
        rt: DeviceState,
        acked: float,
        misses: list[float],
        waited: float,
        *,
        by_read: bool,
        at: float | None = None,
        learn: bool = True,
    ) -> bool:
        """:meth:`_decide`, and what a confirmation teaches about when to read (twin.confirmtiming)."""
        if learn and rt.confirmed_by == cmd.id:
            offset = time.time() - acked if at is None else at
            self.timing.confirmed(cmd.device, at=offset, misses=misses, by_read=by_read, waited=waited)
        return self._decide(cmd, rt)

    def _decide(self, cmd: CommandRecord, rt: DeviceState) -> bool:
        """End ``cmd`` if an observation confirmed or refuted it."""
        if rt.confirmed_by == cmd.id:
            self._finish(cmd, CommandStatus.SUCCEEDED, None)
        elif rt.refuted is not None and rt.refuted[0] == cmd.id:
            self._finish(cmd, CommandStatus.FAILED, ErrorInfo.of(ErrorCode.NOT_CONFIRMED, rt.refuted[1]))
        else:
            return False
        return True
