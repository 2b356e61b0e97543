"""Background status reads: each device on its interval, without crowding out commands or piling on
a failing vendor.

- One read per device at a time, none while the device runs a command (the command reads it
  anyway); each device's next read is due an interval (jittered 0.9-1.1x) after its last one
  started, so a late read is not caught up on, and the first reads of a fleet are spread over its
  first seconds.
- Reads hold at most half of the adapter's cap of vendor calls (at least one), so a command finds
  a slot within one read's time. The loop waits for a free read slot before it starts the next
  read: a fleet whose reads outrun the vendor falls behind (``locktwin_poll_lag_seconds``) instead
  of queueing a task per due device in front of the commands.
- While the vendor fails as a whole (:mod:`twin.backoff`), no read starts. Commands still go
  through, bounded by their own backoff and expiry: an operator's unlock does not wait for the
  poller's caution, and the first command that succeeds ends the pause.
"""

from __future__ import annotations

import heapq
import random

import anyio

from twin.engine import TwinEngine
from twin.metrics import POLL_BACKOFF, POLL_LAG

__all__ = ["Poller"]

#: the first reads of a fleet are spread over this many seconds (or the interval, if shorter)
FIRST_SPREAD = 5.0
#: a paused poller looks again this often (a command that succeeds ends the pause early)
PAUSE_CHECK = 1.0


class Poller:
    def __init__(self, engine: TwinEngine) -> None:
        self.engine = engine
        self.slots = anyio.Semaphore(max(1, int(engine.limiter.total_tokens) // 2))
        self._busy: set[str] = set()
        self._backoff_gauge = POLL_BACKOFF.labels(engine.adapter.vendor)
        self._lag_gauge = POLL_LAG.labels(engine.adapter.vendor)

    async def run(self) -> None:
        now = anyio.current_time()
        due: list[tuple[float, str]] = []
        for device_id, rt in self.engine.devices.items():
            if rt.info.poll_interval:
                due.append((now + random.uniform(0, min(rt.info.poll_interval, FIRST_SPREAD)), device_id))
        heapq.heapify(due)
        if not due:
            return
        async with anyio.create_task_group() as tg:
            while True:
                at, device_id = due[0]
                await anyio.sleep(max(0.0, at - anyio.current_time()))
                pause = self.engine.backoff.remaining()
                self._backoff_gauge.set(pause)
                if pause > 0:
                    await anyio.sleep(min(pause, PAUSE_CHECK))
                    continue
                await self.slots.acquire()
                if self.engine.backoff.remaining() > 0:  # a read that ended while we waited started a pause
                    self.slots.release()
                    continue
                heapq.heappop(due)
                rt = self.engine.devices[device_id]
                interval = rt.info.poll_interval or 60.0
                started = anyio.current_time()
                heapq.heappush(due, (started + interval * random.uniform(0.9, 1.1), device_id))
                if device_id in self._busy or rt.current is not None:
                    self.slots.release()
                    continue
                self._lag_gauge.set(max(0.0, started - at))
                self._busy.add(device_id)
                tg.start_soon(self._read, device_id)

    async def _read(self, device_id: str) -> None:
        try:
            patch = await self.engine.call_read(device_id)
            if patch is not None:
                await self.engine.report(device_id, patch, source="poll")
        finally:
            self._busy.discard(device_id)
            self.slots.release()
