"""How many calls a vendor account takes at once, learned from its answers (AIMD with slow start).

The limit is the number of vendor calls a bridge lets be in flight; it moves between ``floor`` and
``ceiling`` (``max_in_flight``), starting at ``initial``:

- **slow start**: while the vendor has not pushed back for ``MEMORY`` seconds, each call that
  succeeds while the limit is in use adds one (the limit doubles every round trip, as TCP's window
  does), so a vendor that takes 500 calls at once is found in a handful of round trips;
- **additive increase** otherwise: one more per round trip (``1/limit`` per success);
- **decrease** on push-back: a 429 or the vendor's own "too many requests / concurrent over limit"
  code, a call with no answer (a timeout), or the vendor out (5xx). The limit drops to
  ``DECREASE`` of itself, or to 0.9 of the other calls in flight when the refusal came (what the
  vendor was taking just then) if that is less: a rate-limited vendor (50 calls/s) is matched
  in one step instead of several rounds of 429s. Only calls started after the last decrease count:
  a burst of 429s answered to calls that were already under way is one observation, not thirty;
- **a wall met again**: a refusal with about as many calls in flight (within ``SAME_WALL``, or 2) as
  the limit the last refusal left is the vendor's cap, found once more: the limit goes just under
  it (``NEAR_WALL`` of what was in flight) instead of a quarter down, so the long hold that
  follows is spent near the cap, not a quarter below it (a cap of 64 held at 48 left ~25 % of the
  vendor's capacity unused: a storm at 1.39x its floor);
- **hold** after a decrease: no increase for a round trip, doubled for each decrease within the
  last ``MEMORY`` seconds (up to ``HOLD_LONGEST``): a vendor met at the same limit again and again
  is probed less and less often, so its 429s stay rare (a token bucket of 50 calls/s at 200 ms a
  call is ~10 calls in flight: probing it every round trip would cost one 429 in ten calls);
- **rising latency** (a gradient, as TCP Vegas and Netflix's concurrency-limits use): when the
  recent latency (an average over ~``SHORT`` calls) is more than ``LATENCY_TOLERANCE`` times the
  long-run minimum and at least ``LATENCY_SLACK`` seconds above it, the vendor is queueing our
  calls: the limit shrinks gently (``LATENCY_DECREASE``) before any 429;
- **app-limited**: a success while fewer than half the limit's calls are in flight says nothing
  about a higher limit, so it does not raise it (a quiet bridge keeps its limit, it does not
  inflate it to the ceiling); past a refusal, only one while every slot is taken does.

Why not a library: the Python ports of Netflix's concurrency-limits on PyPI are new one-person
packages without users (``adaptive-concurrency`` 0.1, ``aimd-limiter`` 0.1), and the well-kept
limiters (``aiolimiter``, ``limits``) limit rates, not concurrency. The rule is 60 lines, clock
injected, and pinned by ``tests/test_limiter.py``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DECREASE",
    "LATENCY_DECREASE",
    "LATENCY_SLACK",
    "LATENCY_TOLERANCE",
    "NEAR_WALL",
    "SAME_WALL",
    "AdaptiveLimit",
    "LimitSettings",
]

#: the limit after a push-back, as a share of what it was
DECREASE = 0.75
#: the limit after the latency rose, as a share of what it was
LATENCY_DECREASE = 0.9
#: recent latency over the long-run minimum that counts as the vendor queueing our calls ...
LATENCY_TOLERANCE = 2.0
#: ... and by at least this many seconds (below it, a busy event loop's noise is no signal)
LATENCY_SLACK = 0.05
#: a refusal within this share of the last one's calls in flight meets the same wall ...
SAME_WALL = 0.15
#: ... and the limit goes to this share of it
NEAR_WALL = 0.95
#: seconds without push-back after which the limit may double again (slow start)
MEMORY = 30.0
#: the longest hold after a decrease
HOLD_LONGEST = 10.0
#: calls the recent average spans; the minimum is forgotten over ``LONG`` calls
SHORT = 20
LONG = 2000


@dataclass(frozen=True, kw_only=True)
class LimitSettings:
    initial: int
    floor: int
    ceiling: int

    def clamped(self) -> LimitSettings:
        ceiling = max(1, self.ceiling)
        floor = max(1, min(self.floor, ceiling))
        return LimitSettings(initial=max(floor, min(self.initial, ceiling)), floor=floor, ceiling=ceiling)


class AdaptiveLimit:
    """The learned limit; feed it every call's outcome (:meth:`succeeded`, :meth:`overloaded`)."""

    def __init__(self, *, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        settings = settings.clamped()
        self.settings = settings
        self.clock = clock
        self.value = float(settings.initial)
        self.decreases = 0
        self._last_decrease = float("-inf")
        self._decreased: deque[float] = deque()
        self._wall: float | None = None  # the limit the last refusal left
        self._hold_until = float("-inf")
        self._recent: float | None = None  # average latency of the last ~SHORT calls
        self._minimum = math.inf
        self._minimum_age = 0

    @property
    def limit(self) -> int:
        return int(self.value)

    @property
    def slow_start(self) -> bool:
        return self.clock() - self._last_decrease > MEMORY

    def succeeded(self, *, latency: float, in_flight: int, started: float) -> None:
        """A call that began at ``started`` (this clock) succeeded after ``latency`` seconds, with
        ``in_flight`` calls under way (itself included) when it ended."""
        self._observe(latency)
        if self._queueing():
            self._decrease(started, LATENCY_DECREASE)
            return
        if in_flight * 2 < self.value:
            return  # app-limited: the limit was not in use, so this says nothing about a higher one
        if not self.slow_start and in_flight < self.limit:
            # past a refusal the limit grows only while every slot is taken: a storm's tail (fewer
            # calls than the limit) otherwise raised it past the vendor's cap without meeting it
            # (a cap of 6 left at 10, so the next burst began with refusals)
            return
        if self.clock() < self._hold_until:
            return
        step = 1.0 if self.slow_start else 1.0 / self.value
        self.value = min(float(self.settings.ceiling), self.value + step)

    def overloaded(self, *, started: float, in_flight: int) -> None:
        """The vendor pushed back on a call that began at ``started``; ``in_flight`` calls were under
        way when it answered (itself included)."""
        # not halved after a slow start as TCP does: what the vendor was taking when it refused is the
        # better estimate (halving a cap of 64 met at 84 left 42, and 10 s of creeping back to 64)
        if started < self._last_decrease:
            return  # under way when the limit last shrank: the same congestion, already answered
        others, wall = max(1, in_flight - 1), self._wall
        if wall is not None and not self.slow_start and abs(in_flight - wall) <= max(2.0, SAME_WALL * wall):
            self._decrease(started, NEAR_WALL, taken=others * NEAR_WALL)
        else:
            self._decrease(started, DECREASE, taken=others * 0.9)
        self._wall = self.value  # where the vendor's cap is believed to be now

    def _decrease(self, started: float, factor: float, taken: float | None = None) -> None:
        if started < self._last_decrease:
            return  # under way when the limit last shrank: the same congestion, already answered
        value = self.value * factor if taken is None else min(self.value * factor, taken)
        self.value = max(float(self.settings.floor), value)
        now = self.clock()
        self._last_decrease = now
        self.decreases += 1
        while self._decreased and self._decreased[0] < now - MEMORY:
            self._decreased.popleft()
        self._decreased.append(now)
        round_trip = self._recent if self._recent is not None else 0.1
        self._hold_until = now + min(HOLD_LONGEST, round_trip * 2 ** min(len(self._decreased), 16))

    def _observe(self, latency: float) -> None:
        self._minimum_age += 1
        if latency < self._minimum or self._minimum_age > LONG:
            self._minimum, self._minimum_age = latency, 0
        recent = self._recent
        self._recent = latency if recent is None else recent + (latency - recent) / SHORT

    def _queueing(self) -> bool:
        recent, minimum = self._recent, self._minimum
        if recent is None or not math.isfinite(minimum):
            return False
        return recent > minimum * LATENCY_TOLERANCE and recent - minimum > LATENCY_SLACK
