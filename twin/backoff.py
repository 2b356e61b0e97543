"""Whether the vendor is failing as a whole, so that background reads wait instead of piling on.

Every vendor call of a bridge reports here (:class:`~twin.engine.TwinEngine` does it for each call
under its cap). A call fails *vendor-wide* when the vendor itself is out: HTTP 5xx or a transport
error (``VENDOR_UNAVAILABLE``), rate limiting of the account (``RATE_LIMITED``, unless the adapter
says it limits one device: :attr:`twin.adapter.VendorError.vendor_wide`), or no answer within the
engine's timeout. A device-level failure (offline, asleep, busy, one vehicle's limit) says nothing
about the vendor and does not count; neither does it end a pause.

- ``FAILURES_BEFORE_PAUSE`` vendor-wide failures in a row start a pause of ``first`` seconds; each
  failure after a pause ended doubles it, up to ``longest``, jittered down by up to a quarter so that
  shards and restarts do not probe in step;
- a ``Retry-After`` starts (or extends) a pause of exactly that long at once, and a call that
  succeeds meanwhile does not end it (the vendor said when);
- otherwise the first call that succeeds ends the pause and the count.

Failures of calls that were already under way when a pause started do not escalate it: a burst of
reads failing together is one observation, not eight.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["FAILURES_BEFORE_PAUSE", "VendorBackoff"]

FAILURES_BEFORE_PAUSE = 3


class VendorBackoff:
    def __init__(
        self,
        *,
        first: float = 1.0,
        longest: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first = first
        self.longest = longest
        self.clock = clock
        self.failures = 0
        self.level = 0
        self.until = 0.0
        self.paused_at = float("-inf")
        self.told_until = 0.0  # by a Retry-After

    def remaining(self) -> float:
        """Seconds until background reads may go on (0: now)."""
        return max(0.0, self.until - self.clock(), self.told_until - self.clock())

    def succeeded(self) -> None:
        self.failures = self.level = 0
        self.until = 0.0
        self.paused_at = float("-inf")

    def failed(self, *, started: float, retry_after: float | None = None) -> float:
        """A vendor-wide failure of a call started at ``started`` (this clock); returns the pause now."""
        now = self.clock()
        if retry_after is not None:
            self.told_until = max(self.told_until, now + retry_after)
            return self.remaining()
        if now < self.until or started < self.paused_at:
            return self.remaining()  # paused already, or the call started before this pause did
        self.failures += 1
        if self.failures >= FAILURES_BEFORE_PAUSE:
            pause = min(self.first * 2**self.level, self.longest) * random.uniform(0.75, 1.0)
            self.level = min(self.level + 1, 30)
            self.until, self.paused_at = now + pause, now
        return self.remaining()
