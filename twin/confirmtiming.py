"""When to read a lock after its vendor accepted a command: learned per vendor and per device.

A command is done only once the device reports the new state, so the bridge reads it after the
vendor's acknowledgement. Read too early and the read is wasted (a call the account pays for, and a
wait for the next); read late and the lock was done long before anyone was told. The right moment
is the lock's own time (a scooter's bolt ~1 s, a car's several, a door lock's under one), so it is
learned from what happened to earlier commands, kept in the store (``timings``; a store without
any starts from the succeeded commands' history, then from the adapter's ``confirm_interval``):

- each key (the vendor, each device) keeps a bracket: ``hit``, an offset after the
  acknowledgement at which a read has confirmed, and ``miss``, one at which a read still showed
  the old state (the lock's time lies between). The **first read** goes out at ``hit`` (the
  device's own once it has ``DEVICE_SAMPLES`` commands behind it, the vendor's until then);
- a read that still shows the old state is a **miss**: the next reads follow in steps of a
  quarter of ``hit`` (at least ``MIN_STEP``) growing 1.5x, up to the adapter's
  ``confirm_max_interval``; what a command shows narrows the bracket (or, if it contradicts it,
  the lock became slower, replaces it);
- after ``PROBE_AFTER`` commands in a row confirmed by their first read, **one** command is read
  halfway between ``miss`` and ``hit`` (or at half ``hit``, with no miss known), until the gain
  would be under a tenth of ``hit``: a hit there lowers ``hit``, a miss raises ``miss``. ``miss``
  fades by 2 % a command so that a lock that became faster is found again;
- a **push** that confirms before the first read changes nothing (the vendor told us for free:
  no need to read sooner), and a command whose reads failed teaches nothing.

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
    hit: float
    miss: float = 0.0
    streak: int = 0
    samples: int = 0
    #: an offset to try once, lower than ``hit`` (None: none), and the one being tried
    probe: float | None = None
    probing: float | None = None


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
        for key, hit, miss, streak, samples in self.store.timings():
            self._timings[key] = _Timing(hit=hit, miss=miss, streak=streak, samples=samples)
        if VENDOR_KEY not in self._timings:
            history = [seconds for _, seconds in self.store.confirmation_history()]
            if history:  # an upper bound (it includes the read): the first reads confirm, then it is tried lower
                self._timings[VENDOR_KEY] = _Timing(hit=min(self.prior, statistics.median(history)))

    def _vendor(self) -> _Timing:
        timing = self._timings.get(VENDOR_KEY)
        if timing is None:
            timing = self._timings[VENDOR_KEY] = _Timing(hit=self.prior)
        return timing

    def _timing(self, device: str) -> _Timing:
        own = self._timings.get(device)
        return own if own is not None and own.samples >= DEVICE_SAMPLES else self._vendor()

    def first_wait(self, device: str) -> float:
        """Seconds after the acknowledgement before the first confirmation read."""
        timing = self._timing(device)
        if timing.probe is not None:  # one command tries it; the others keep to what is known
            timing.probing, timing.probe = timing.probe, None
            return timing.probing
        return timing.hit

    def step(self, device: str, previous: float | None) -> float:
        """Seconds to the next read after a miss (``previous``: the step before, None: the first)."""
        if previous is not None:
            return min(previous * 1.5, self.longest)
        return min(max(MIN_STEP, self._timing(device).hit / 4), self.longest)

    def confirmed(self, device: str, *, at: float, misses: Sequence[float], by_read: bool, waited: float) -> None:
        """A command of ``device`` was confirmed ``at`` seconds after its acknowledgement, by our
        read at that offset (``by_read``) or by an observation we did not ask for; ``misses``: the
        offsets of the reads that came too early; ``waited``: the first wait it was given."""
        for key in (device, VENDOR_KEY):
            timing = self._timings.get(key)
            if timing is None:
                vendor = self._vendor()
                timing = self._timings[key] = _Timing(hit=vendor.hit, miss=vendor.miss)
            self._learn(timing, at=at, misses=misses, by_read=by_read, waited=waited)
            self._dirty.add(key)

    def persist(self) -> None:
        """Write what was learned with the store's next commit (the runtime calls this every second
        and when it stops)."""
        if self._dirty and self.store is not None and self.store.is_open:
            self.store.defer("timings", self._save)

    @staticmethod
    def _learn(timing: _Timing, *, at: float, misses: Sequence[float], by_read: bool, waited: float) -> None:
        timing.samples += 1
        if timing.probing is not None and abs(waited - timing.probing) <= INSTANT / 2:
            timing.probing = None  # the probe is answered, by this command
        if not misses and not by_read:
            return  # a push (or a poll) was first: reading sooner would only spend calls
        lo = max([timing.miss, *misses])
        hi = min(timing.hit, at) if by_read else timing.hit
        if lo < hi:
            timing.miss, timing.hit = lo, hi
        else:  # what this command shows contradicts the bracket: the lock changed, start from it
            timing.miss, timing.hit = max(misses, default=0.0), at
        if misses:
            timing.streak = 0
            return
        timing.miss *= 0.98
        if abs(waited - timing.hit) > max(INSTANT / 2, timing.hit / 1000):
            return  # a first read at another offset (a probe, or before the bracket moved)
        timing.streak += 1
        if timing.streak < (PROBE_AFTER if timing.miss > 0 else 1) or timing.probe is not None:
            return
        lower = (timing.hit + timing.miss) / 2 if timing.miss > 0 else timing.hit / 2
        if timing.hit - lower >= max(timing.hit / 10, INSTANT / 2):
            timing.probe = lower if lower >= INSTANT else 0.0
            timing.streak = 0

    def _save(self, conn: object) -> None:
        dirty, self._dirty = self._dirty, set()
        rows = [(k, t.hit, t.miss, t.streak, t.samples) for k in dirty if (t := self._timings.get(k)) is not None]
        conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO timings(key, wait, miss, streak, samples) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO "
            "UPDATE SET wait=excluded.wait, miss=excluded.miss, streak=excluded.streak, samples=excluded.samples",
            rows,
        )
