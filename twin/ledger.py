"""The budget ledger of one vendor account: what its calls cost this period, and what is left.

Every HTTP request a bridge sends to its vendor is counted here (:data:`twin.http.REQUEST_METER`;
the gate meters each call, the runtime everything else, such as listing devices at start), per
period (an hour, a UTC day or a UTC month). Two kinds of limit end in the same answer:

- **the configured budget** (``budget = {calls = 50000, per = "month"}``, none by default):
  commands may spend all of it; status reads stop at ``reserve`` (a share kept for commands) and
  are paced to fit what remains until the reset (:meth:`Ledger.read_wait`), so a fleet polled on
  a budget has its reads stretched evenly instead of spending the month in a week;
- **the vendor's own quota** (Tuya's ``28841004``, Smartcar's ``VEHICLE_REQUEST_LIMIT`` for one
  vehicle): the vendor said no; nothing more is sent (to that vehicle, or at all) until the time it
  gave, or else until one probe call after a pause that doubles from ``PROBE_FIRST`` to
  ``PROBE_LONGEST`` (or the budget's reset, if sooner).

While spent, a call is refused before it reaches the vendor with ``QUOTA_EXHAUSTED`` and
``retry_after`` = the seconds until calls go out again: a command ends ``failed`` at once (not
retried, so no retry storm), and the device is not shown offline for it. Per-device budgets
(``device_budget``, for plans that count calls per vehicle) work the same, per device.

The ledger is written to the store within a second (:meth:`Ledger.persist`, and when the bridge
stops): a restart keeps it; a crash may forget the last second of requests.
"""

from __future__ import annotations

import json
import math
import time
from calendar import monthrange
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ErrorCode
from contracts.messages import BridgeBudget
from twin.adapter import VendorError
from twin.metrics import BUDGET_REMAINING, VENDOR_REQUESTS
from twin.store import Store

__all__ = ["PROBE_FIRST", "PROBE_LONGEST", "BudgetSettings", "Ledger", "Period", "next_reset", "period_start"]

Period = Literal["hour", "day", "month"]
#: the first pause before asking a vendor that said its quota is spent again, and the longest
PROBE_FIRST = 60.0
PROBE_LONGEST = 3600.0
#: how the store keeps the ledger (meta) and the per-device counts (ledger_devices)
META_KEY = "ledger"


class BudgetSettings(BaseModel):
    """A budget of vendor requests per period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calls: int = Field(ge=1, description="vendor requests allowed per period")
    per: Period = "day"
    reserve: float = Field(
        default=0.1, ge=0, lt=1, description="share of the budget only commands may spend: status reads stop there"
    )


def period_start(at: float, per: Period) -> float:
    """The start of the period (UTC) that ``at`` (epoch seconds) falls in."""
    moment = datetime.fromtimestamp(at, UTC)
    if per == "hour":
        moment = moment.replace(minute=0, second=0, microsecond=0)
    elif per == "day":
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        moment = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.timestamp()


def next_reset(start: float, per: Period) -> float:
    """When the period that began at ``start`` ends."""
    if per == "hour":
        return start + 3600.0
    if per == "day":
        return start + 86400.0
    moment = datetime.fromtimestamp(start, UTC)
    return start + monthrange(moment.year, moment.month)[1] * 86400.0


@dataclass
class _Count:
    start: float
    spent: int = 0
    #: the vendor said this one's quota is spent: nothing is sent before then (epoch s)
    vendor_until: float = 0.0
    probe_level: int = 0
    #: one call is out to see whether the vendor's quota is back
    probing: bool = False


class Ledger:
    """Requests spent per period, and whether a call may go out now."""

    def __init__(
        self,
        *,
        vendor: str,
        budget: BudgetSettings | None = None,
        device_budget: BudgetSettings | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vendor = vendor
        self.budget = budget
        self.device_budget = device_budget
        self.store = store
        self.clock = clock
        self.per: Period = budget.per if budget is not None else "day"
        self.account = _Count(start=period_start(clock(), self.per))
        #: when the current period ends (the hot path compares with it, not with a date)
        self._period_end = next_reset(self.account.start, self.per)
        self.devices: dict[str, _Count] = {}
        #: requests per status read, learned (a Smartcar full read is four)
        self.requests_per_read = 1.0
        self._last_read = float("-inf")
        #: something changed since the document was last taken (:meth:`take_changed`)
        self.changed = True
        #: something changed since it was last written (:meth:`persist`)
        self.unsaved = False
        self._dirty: set[str] = set()
        self._gauge = BUDGET_REMAINING.labels(vendor)
        self._requests = VENDOR_REQUESTS.labels(vendor)

    # -- the store ----------------------------------------------------------------------------
    def load(self) -> None:
        """The ledger the store kept (a restart keeps what was spent this period)."""
        if self.store is None:
            return
        raw = self.store.meta(META_KEY)
        if raw:
            kept = json.loads(raw)
            if kept.get("per") == self.per:
                self.account = _Count(
                    start=float(kept["start"]),
                    spent=int(kept["spent"]),
                    vendor_until=float(kept.get("vendor_until", 0.0)),
                    probe_level=int(kept.get("probe_level", 0)),
                )
        for device, start, spent, until in self.store.ledger_devices():
            self.devices[device] = _Count(start=start, spent=spent, vendor_until=until)
        self._roll(self.clock())
        self._update_gauge()

    def _save(self, conn: Any) -> None:
        account = self.account
        kept = {
            "per": self.per,
            "start": account.start,
            "spent": account.spent,
            "vendor_until": account.vendor_until,
            "probe_level": account.probe_level,
        }
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (META_KEY, json.dumps(kept)),
        )
        dirty, self._dirty = self._dirty, set()
        rows = [(d, c.start, c.spent, c.vendor_until) for d in dirty if (c := self.devices.get(d)) is not None]
        if rows:
            conn.executemany(
                "INSERT INTO ledger_devices(device, start, spent, vendor_until) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(device) DO UPDATE SET start=excluded.start, spent=excluded.spent, "
                "vendor_until=excluded.vendor_until",
                rows,
            )

    def _mark(self, device: str | None = None) -> None:
        self.changed = self.unsaved = True
        if device is not None:
            self._dirty.add(device)

    def persist(self) -> None:
        """Write what changed with the store's next commit (the runtime calls this every second and
        when it stops: a write per request would be a statement in every commit of a command)."""
        if self.unsaved and self.store is not None and self.store.is_open:
            self.unsaved = False
            self.store.defer(META_KEY, self._save)

    # -- spending -----------------------------------------------------------------------------
    def _roll(self, now: float) -> None:
        if self.account.start <= now < self._period_end:
            return
        start = period_start(now, self.per)
        self._period_end = next_reset(start, self.per)
        if start != self.account.start:
            self.account.start, self.account.spent = start, 0
            self._mark()

    def spend(self, device: str | None = None, requests: int = 1) -> None:
        """``requests`` were sent (for ``device``, when the call was about one)."""
        now = self.clock()
        self._roll(now)
        self.account.spent += requests
        self._requests.inc(requests)
        if device is not None and self.device_budget is not None:
            count = self._device(device, now)
            count.spent += requests
        self._mark(device if self.device_budget is not None else None)
        if self.budget is not None:
            self._gauge.set(max(0, self.budget.calls - self.account.spent))

    def _device(self, device: str, now: float) -> _Count:
        per = self.device_budget.per if self.device_budget is not None else self.per
        start = period_start(now, per)
        count = self.devices.get(device)
        if count is None:
            count = self.devices[device] = _Count(start=start)
        elif count.start != start:
            count.start, count.spent = start, 0
        return count

    def read_done(self, requests: int) -> None:
        """A status read made ``requests`` requests (learned for pacing)."""
        if requests > 0:
            self.requests_per_read += (requests - self.requests_per_read) / 10

    # -- may a call go out? ------------------------------------------------------------------
    def remaining(self) -> int | None:
        if self.budget is None:
            return None
        self._roll(self.clock())
        return max(0, self.budget.calls - self.account.spent)

    def reserve(self) -> int:
        return 0 if self.budget is None else math.ceil(self.budget.calls * self.budget.reserve)

    def resets_at(self) -> float:
        return next_reset(self.account.start, self.per)

    def check(self, *, device: str | None, read: bool, command: bool = False) -> None:
        """Raise ``QUOTA_EXHAUSTED`` when this call may not go out: a background read not into the
        reserve, a command's first call only with its confirmation read left (a command sent that
        could not be confirmed would be a call wasted, and a lock in an unknown state)."""
        if self.budget is None and self.device_budget is None and self.account.vendor_until <= 0 and not self.devices:
            return  # nothing limits this account: the common case, kept cheap
        now = self.clock()
        self._roll(now)
        self._refuse_if_vendor_said(self.account, now, what="the vendor says this account's quota is spent")
        remaining = self.remaining()
        need = 1 + math.ceil(self.requests_per_read) if command else 1
        if remaining is not None and (remaining < need or (read and remaining <= self.reserve())):
            why = "spent" if remaining < need else "down to what is kept for commands"
            raise self._refusal(
                f"the budget of {self.budget.calls if self.budget else 0} requests per {self.per} is {why}",
                self.resets_at() - now,
            )
        if device is None:
            return
        count = self.devices.get(device)
        if count is not None:
            self._refuse_if_vendor_said(count, now, what=f"the vendor says the quota of {device} is spent")
        if self.device_budget is not None:
            count = self._device(device, now)
            if count.spent + (need if command else 1) > self.device_budget.calls:
                reset = next_reset(count.start, self.device_budget.per)
                raise self._refusal(
                    f"the budget of {self.device_budget.calls} requests per {self.device_budget.per} of {device} "
                    "is spent",
                    reset - now,
                )

    def _refuse_if_vendor_said(self, count: _Count, now: float, *, what: str) -> None:
        if count.vendor_until <= 0:
            return
        if now < count.vendor_until or count.probing:
            wait = max(count.vendor_until - now, 1.0)
            raise self._refusal(what, wait)
        count.probing = True  # this call asks the vendor again; the others wait for its answer

    def _refusal(self, message: str, retry_after: float) -> VendorError:
        return VendorError(
            ErrorCode.QUOTA_EXHAUSTED, message, retryable=False, retry_after=round(max(0.0, retry_after), 1)
        )

    def read_wait(self) -> float:
        """Seconds before the next status read may start (0: now): reads are paced to fit what
        remains above the reserve until the reset, and stop at the reserve."""
        if self.budget is None and self.account.vendor_until <= 0:
            return 0.0
        now = self.clock()
        if self.account.vendor_until > now:
            return self.account.vendor_until - now
        remaining = self.remaining()
        if remaining is None:
            return 0.0
        spare = remaining - self.reserve()
        until_reset = self.resets_at() - now
        if spare <= 0:
            return max(0.0, until_reset)
        pace = until_reset / (spare / max(1.0, self.requests_per_read))
        return max(0.0, self._last_read + pace - now)

    def read_interval(self) -> float | None:
        """Seconds between status reads the budget allows now (None: not paced)."""
        remaining = self.remaining()
        if remaining is None:
            return None
        spare = remaining - self.reserve()
        until_reset = self.resets_at() - self.clock()
        return None if spare <= 0 else until_reset / (spare / max(1.0, self.requests_per_read))

    def read_started(self) -> None:
        self._last_read = self.clock()

    # -- what the vendor said ----------------------------------------------------------------
    def vendor_exhausted(self, *, device: str | None, retry_after: float | None) -> float:
        """The vendor said the quota (of ``device``, or of the account) is spent; returns the
        seconds before it is asked again."""
        now = self.clock()
        count = self.account if device is None else self._device(device, now)
        count.probing = False
        if retry_after is not None and retry_after > 0:
            wait = retry_after
        else:
            wait = min(PROBE_FIRST * 2**count.probe_level, PROBE_LONGEST)
            count.probe_level = min(count.probe_level + 1, 30)
            if self.budget is not None and device is None:
                wait = min(wait, max(1.0, self.resets_at() - now))
        count.vendor_until = now + wait
        self._mark(device)
        self._update_gauge()
        return wait

    def vendor_answered(self, *, device: str | None) -> None:
        """A call went through: a quota the vendor said was spent is back."""
        for count, key in ((self.account, None), (self.devices.get(device) if device else None, device)):
            if count is not None and (count.vendor_until > 0 or count.probing):
                count.vendor_until, count.probe_level, count.probing = 0.0, 0, False
                self._mark(key)
                self._update_gauge()

    def probe_done(self, *, device: str | None) -> None:
        """A call ended, however: if it was the probe, the next call may probe again."""
        self.account.probing = False
        count = self.devices.get(device) if device is not None else None
        if count is not None:
            count.probing = False

    def vendor_exhausted_devices(self) -> int:
        now = self.clock()
        return sum(1 for c in self.devices.values() if c.vendor_until > now)

    # -- what is published -------------------------------------------------------------------
    def exhausted(self) -> tuple[str | None, float | None]:
        """(by whom: "budget" or "vendor", when calls go out again) or (None, None)."""
        now = self.clock()
        if self.account.vendor_until > now:
            return "vendor", self.account.vendor_until
        remaining = self.remaining()
        if remaining is not None and remaining < 1 + math.ceil(self.requests_per_read):
            return "budget", self.resets_at()  # not enough left for a command and its confirmation
        return None, None

    def document(self, *, limit: int) -> BridgeBudget:
        """What ``bridge/{vendor}/budget`` shows (``limit``: the gate's learned limit now)."""
        by, until = self.exhausted()
        interval = self.read_interval()
        return BridgeBudget(
            calls=None if self.budget is None else self.budget.calls,
            per=self.per,
            spent=self.account.spent,
            remaining=self.remaining(),
            reserve=self.reserve(),
            period_start=datetime.fromtimestamp(self.account.start, UTC),
            resets_at=datetime.fromtimestamp(self.resets_at(), UTC),
            exhausted=by,
            retry_at=None if until is None else datetime.fromtimestamp(until, UTC),
            devices_exhausted=self.vendor_exhausted_devices(),
            read_interval=None if interval is None else round(interval, 3),
            limit=max(1, limit),
        )

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def _update_gauge(self) -> None:
        remaining = self.remaining()
        if self.account.vendor_until > self.clock():
            self._gauge.set(0)  # the vendor refuses: nothing is left, whatever our count says
        else:
            self._gauge.set(math.nan if remaining is None else remaining)  # NaN: no budget configured
