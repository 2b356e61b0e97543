"""Background status reads: each device on its interval, without crowding out commands or piling on
a failing vendor.

- One read per device at a time, none while the device runs a command (the command reads it
  anyway); each device's next read is due an interval (jittered 0.9-1.1x) after its last one
  started, so a late read is not caught up on, and the first reads of a fleet are spread over its
  first seconds.
- Reads hold at most half of the adapter's cap of vendor calls (at least one: the gate's
  ``read_slots``, :mod:`twin.gate`), so a command finds a slot within one read's time. The loop
  waits for a free read slot before it starts the next read: a fleet whose reads outrun the vendor
  falls behind (``locktwin_poll_lag_seconds``) instead of queueing a task per due device in front
  of the commands.
- While the vendor fails as a whole (:mod:`twin.backoff`), no read starts. Commands still go
  through, bounded by their own backoff and expiry: an operator's unlock does not wait for the
  poller's caution, and the first command that succeeds ends the pause.
- On a budget (:mod:`twin.ledger`), reads are paced to fit what remains of it above the share kept
  for commands until the period's reset (every device's interval stretches alike, since the
  longest-due device is read first), and stop at that share; a device observed by other means
  within its interval (a vendor push, a command's confirmation) is not read: pushes are free.
"""

from __future__ import annotations

import heapq
import random

import anyio

from twin.extensions import BridgeContext, Extension
from twin.metrics import POLL_BACKOFF, POLL_LAG
from twin.store import StoreUnavailable

__all__ = ["Poller"]

#: the first reads of a fleet are spread over this many seconds (or the interval, if shorter)
FIRST_SPREAD = 5.0
#: a paused poller looks again this often (a command that succeeds ends the pause early)
PAUSE_CHECK = 1.0


class Poller(Extension):
    """Reads each device with a ``poll_interval`` on that interval (an extension of the bridge)."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._bridge: BridgeContext | None = None

    async def start(self, bridge: BridgeContext) -> None:
        self._bridge = bridge
        bridge.task_group.start_soon(self.run)

    async def run(self) -> None:
        bridge = self._bridge
        assert bridge is not None
        gate, fleet = bridge.gate, bridge.fleet
        backoff_gauge, lag_gauge = POLL_BACKOFF.labels(bridge.vendor), POLL_LAG.labels(bridge.vendor)
        now = anyio.current_time()
        due: list[tuple[float, str]] = []
        for info in fleet.devices():
            if info.poll_interval:
                due.append((now + random.uniform(0, min(info.poll_interval, FIRST_SPREAD)), info.id))
        heapq.heapify(due)
        if not due:
            return
        async with anyio.create_task_group() as tg:
            while True:
                at, device_id = due[0]
                await anyio.sleep(max(0.0, at - anyio.current_time()))
                pause = gate.backoff.remaining()
                backoff_gauge.set(pause)
                if pause <= 0 and (paced := gate.ledger.read_wait()) > 0:
                    await anyio.sleep(min(paced, PAUSE_CHECK))  # the budget paces reads
                    continue
                if pause > 0:
                    await anyio.sleep(min(pause, PAUSE_CHECK))
                    continue
                await gate.read_slots.acquire()
                if gate.backoff.remaining() > 0:  # a read that ended while we waited started a pause
                    gate.read_slots.release()
                    continue
                heapq.heappop(due)
                known = fleet.info(device_id)
                interval = (known.poll_interval if known is not None else None) or 60.0
                started = anyio.current_time()
                seen = fleet.last_observed(device_id) if gate.ledger.budget is not None else None
                fresh = seen is not None and started - seen < interval / 2
                # observed meanwhile (a push, a confirmation): on a budget, no read is spent on it
                last = seen if fresh and seen is not None else started
                heapq.heappush(due, (last + interval * random.uniform(0.9, 1.1), device_id))
                if fresh or device_id in self._busy or fleet.busy(device_id):
                    gate.read_slots.release()
                    continue
                gate.ledger.read_started()
                lag_gauge.set(max(0.0, started - at))
                self._busy.add(device_id)
                tg.start_soon(self._read, bridge, device_id)

    async def _read(self, bridge: BridgeContext, device_id: str) -> None:
        try:
            patch = await bridge.read(device_id)
            if patch is not None:
                await bridge.sink.report(device_id, patch, source="poll")
        except StoreUnavailable:
            pass  # the engine keeps what it observed and saves it once the store writes again
        finally:
            self._busy.discard(device_id)
            bridge.gate.read_slots.release()
