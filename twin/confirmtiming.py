"""When to read a lock after its vendor accepted a command: learned per vendor and per device.

A command is done only once the device reports the new state, so the bridge reads it after the
vendor's acknowledgement. Read too early and the read is wasted (a call the account pays for, and a
wait for the next); read late and the lock was done long before anyone was told. The right moment
is the lock's own time (a scooter's bolt ~1 s, a car's several, a door lock's under one), so it is
learned from what happened to earlier commands, kept in the store (``timings``; a store without
any starts from the succeeded commands' history, then from the adapter's ``confirm_interval``):

- the **first read** goes out ``wait`` seconds after the acknowledgement (the device's own
  ``wait`` once it has ``DEVICE_SAMPLES`` commands behind it, the vendor's until then);
- a read that still shows the old state is a **miss**: the next reads follow in steps of a
  quarter of ``wait`` (at least ``MIN_STEP``) growing 1.5x, up to the adapter's
  ``confirm_max_interval``; the first read that confirms sets ``wait`` to its own offset, and
  the latest miss is remembered (``miss``: the lock was not done by then);
- a first read that **confirms** says the lock was done by ``wait``, maybe long before: after
  ``PROBE_AFTER`` such commands in a row ``wait`` moves halfway down to ``miss`` (or halves, with
  no miss known), until the gain would be under a tenth of it; ``miss`` fades by 2 % a command so
  that a lock that became faster is found again;
- a **push** that confirms before the first read leaves ``wait`` as it is (the vendor told us for
  free: no need to read sooner).

So a lock that moves at once is read at once after a few commands (zero-latency: ~ten), and a
1 s bolt is read just after a second, at the price of one wasted read now and then.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from twin.store import Store

__all__ = ["DEVICE_SAMPLES", "MIN_STEP", "PROBE_AFTER", "ConfirmTiming"]

#: commands of a device before its own timing is used instead of the vendor's
DEVICE_SAMPLES = 3
#: first-read hits in a row before the wait is tried lower (with a miss known; 1 without)
PROBE_AFTER = 3
#: the smallest step between two reads after a miss
MIN_STEP = 0.05
#: waits below this are no wait
INSTANT = 0.002
VENDOR_KEY = "*"


@dataclass
class _Timing:
    wait: float
    miss: float = 0.0
    streak: int = 0
    samples: int = 0


class ConfirmTiming:
    """The learned waits of one vendor's devices (see the module doc)."""

    def __init__(self, *, prior: float, longest: float, store: Store | None = None) -> None:
        self.prior = prior
        self.longest = longest
        self.store = store
        self._timings: dict[str, _Timing] = {}
        self._dirty: set[str] = set()

    def load(self) -> None:
        if self.store is None:
            return
        for key, wait, miss, streak, samples in self.store.timings():
            self._timings[key] = _Timing(wait=wait, miss=miss, streak=streak, samples=samples)
        if VENDOR_KEY not in self._timings:
            history = [seconds for _, seconds in self.store.confirmation_history()]
            if history:  # an upper bound (it includes the read): the first reads confirm, then it is tried lower
                self._timings[VENDOR_KEY] = _Timing(wait=min(self.prior, statistics.median(history)))

    def _vendor(self) -> _Timing:
        timing = self._timings.get(VENDOR_KEY)
        if timing is None:
            timing = self._timings[VENDOR_KEY] = _Timing(wait=self.prior)
        return timing

    def first_wait(self, device: str) -> float:
        """Seconds after the acknowledgement before the first confirmation read."""
        own = self._timings.get(device)
        timing = own if own is not None and own.samples >= DEVICE_SAMPLES else self._vendor()
        return timing.wait

    def step(self, device: str, previous: float | None) -> float:
        """Seconds to the next read after a miss (``previous``: the step before, None: the first)."""
        if previous is not None:
            return min(previous * 1.5, self.longest)
        return min(max(MIN_STEP, self.first_wait(device) / 4), self.longest)

    def confirmed(self, device: str, *, at: float, misses: Sequence[float], by_read: bool) -> None:
        """A command of ``device`` was confirmed ``at`` seconds after its acknowledgement, by our
        read at that offset (``by_read``) or by an observation we did not ask for; ``misses``: the
        offsets of the reads that came too early."""
        for key in (device, VENDOR_KEY):
            timing = self._timings.get(key)
            if timing is None:
                timing = self._timings[key] = _Timing(wait=self._vendor().wait)
            self._learn(timing, at=at, misses=misses, by_read=by_read)
            self._dirty.add(key)
        if self.store is not None and self.store.is_open:
            self.store.defer("timings", self._save)

    @staticmethod
    def _learn(timing: _Timing, *, at: float, misses: Sequence[float], by_read: bool) -> None:
        timing.samples += 1
        if misses:
            timing.miss = max(timing.miss, *misses)
            timing.wait = max(at, timing.miss)
            timing.streak = 0
            return
        if not by_read:
            return  # a push (or a poll) was first: reading sooner would only spend calls
        timing.streak += 1
        timing.miss *= 0.98
        if timing.streak < (PROBE_AFTER if timing.miss > 0 else 1):
            return
        lower = (timing.wait + timing.miss) / 2 if timing.miss > 0 else timing.wait / 2
        if timing.wait - lower >= max(timing.wait / 10, INSTANT / 2):
            timing.wait = lower if lower >= INSTANT else 0.0
            timing.streak = 0

    def _save(self, conn: object) -> None:
        dirty, self._dirty = self._dirty, set()
        rows = [(k, t.wait, t.miss, t.streak, t.samples) for k in dirty if (t := self._timings.get(k)) is not None]
        conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO timings(key, wait, miss, streak, samples) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO "
            "UPDATE SET wait=excluded.wait, miss=excluded.miss, streak=excluded.streak, samples=excluded.samples",
            rows,
        )
