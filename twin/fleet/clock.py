"""Time for the fleet service: the wall clock, or a manual one that tests move forward.

Only scheduling reads this clock (when a job is due, how old a report is). Commands are stamped
with the real time they are sent (``issued_at``), since the bridges check it against theirs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import anyio

__all__ = ["Clock", "ManualClock", "SystemClock", "iso"]

#: the longest a wait trusts the wall clock before looking again (it may be stepped)
_MAX_NAP = 30.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        while (left := when - time.time()) > 0:  # noqa: ASYNC110 - the wall clock, checked in naps
            await anyio.sleep(min(left, _MAX_NAP))


class ManualClock:
    """A clock that stands still until :meth:`advance` (or :meth:`set`) moves it."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._moved = anyio.Event()

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = when
        self._moved.set()
        self._moved = anyio.Event()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep_until(self, when: float) -> None:
        while self._now < when:
            await self._moved.wait()
