"""The vendor-call gate: every call a bridge makes to its vendor goes through here.

It owns what every call needs and nothing else does:

- the **concurrency limit** of the vendor account, learned from the vendor's answers
  (:mod:`twin.limiter`: it grows while calls succeed at a flat latency, shrinks on 429s, the
  vendor's busy codes, timeouts and rising latency), between ``min_in_flight`` and
  ``max_in_flight``; slots go by **precedence**: a confirmation read of a command the vendor
  accepted first, then a command's call, then background reads (polling, ``/get``), which may
  also hold at most half of the limit (``read_slots``, at least one), so a command finds a slot
  within one read's time however busy the poller is;
- the **deadline**: a command's time runs while it waits for a slot, a command that expired
  waiting, or has less than ``send_margin`` left once it has a slot, never reaches the vendor
  (the call would arrive after the command's expiry), and a call gets only what is left of it;
- the **timeout** of one call (``call_timeout``), after which the call is one "that got no answer"
  (``maybe_executed``: the vendor may still act on it);
- a vendor's **Retry-After** for the whole account: no call goes out before it (the vendor said
  when), commands whose time ends first are answered ``RATE_LIMITED`` without a call;
- the **budget ledger** (:mod:`twin.ledger`): every HTTP request of a call is counted, a call the
  budget (or the vendor's spent quota) does not allow is refused ``QUOTA_EXHAUSTED`` before it goes;
- the **vendor-wide backoff** (:mod:`twin.backoff`): every outcome is reported there;
- the **metrics** (``locktwin_vendor_call_seconds``, ``locktwin_vendor_call_limit``) and the
  **translation** of anything an adapter raises that is not a :class:`~twin.adapter.VendorError`
  into ``VENDOR_ERROR``.

Exceptions::

    VendorError     every failure leaves the gate as one (DEVICE_TIMEOUT when the call got no
                    answer, QUOTA_EXHAUSTED when the budget refused it, VENDOR_ERROR for an
                    adapter's own bug)
    TooLate         a VendorError (EXPIRED): the call was not started, its command's time is up
    StoreUnavailable  passed through: not the vendor's (the command waits for its store)
    LeaseLost         passed through: the partition's engine ends (another instance serves it)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import TypeVar

import anyio

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.backoff import VendorBackoff
from twin.http import REQUEST_METER
from twin.ledger import Ledger
from twin.limiter import AdaptiveLimit, LimitSettings
from twin.metrics import CALL_LIMIT, VENDOR_CALL_SECONDS
from twin.store import StoreUnavailable
from twin.storeapi import LeaseLost

__all__ = ["Priority", "Slots", "TooLate", "VendorGate"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the codes that say the vendor pushes back on how much we send (the limit shrinks)
PUSH_BACK = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.VENDOR_UNAVAILABLE})


class Priority(IntEnum):
    """Who gets the next free slot: the lowest value first."""

    CONFIRM = 0  # a read confirming a command the vendor accepted: finishes work already started
    COMMAND = 1
    READ = 2  # polling and /get


@dataclass(eq=False)
class _Waiter:
    event: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False


class Slots:
    """Slots whose number can change while they are held, given out by :class:`Priority`."""

    def __init__(self, capacity: Callable[[], int]) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiting: tuple[deque[_Waiter], ...] = tuple(deque() for _ in Priority)

    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting)

    async def acquire(self, priority: Priority = Priority.COMMAND) -> None:
        if self.in_use < self.capacity() and not any(self._waiting[p] for p in range(priority + 1)):
            self.in_use += 1
            return
        waiter = _Waiter()
        self._waiting[priority].append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()  # handed to us as we were cancelled: the next one takes it
            else:
                self._waiting[priority].remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to the waiters, by precedence (after the capacity grew, or a release)."""
        while self.in_use < self.capacity():
            queue = next((q for q in self._waiting if q), None)
            if queue is None:
                return
            waiter = queue.popleft()
            waiter.granted = True
            self.in_use += 1
            waiter.event.set()

    async def __aenter__(self) -> None:
        await self.acquire(Priority.READ)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class TooLate(VendorError):
    """A command's call was not started: its deadline passed waiting for a slot, or less than the
    send margin was left. The vendor never got it."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EXPIRED, message, retryable=False)


class VendorGate:
    def __init__(
        self,
        *,
        vendor: str,
        limit: int,
        call_timeout: float,
        initial: int | None = None,
        floor: int = 1,
        ledger: Ledger | None = None,
        send_margin: float = 0.0,
    ) -> None:
        self.vendor = vendor
        self.call_timeout = call_timeout
        self.send_margin = send_margin
        settings = LimitSettings(initial=limit if initial is None else initial, floor=floor, ceiling=limit)
        self.adaptive = AdaptiveLimit(settings=settings)
        self.slots = Slots(lambda: self.adaptive.limit)
        #: slots of the limit that background reads may hold at once (commands have the rest)
        self.read_slots = Slots(lambda: max(1, self.adaptive.limit // 2))
        #: whether the vendor fails as a whole: background reads wait while it does (twin.polling)
        self.backoff = VendorBackoff()
        self.ledger = ledger or Ledger(vendor=vendor)
        #: no call before this (monotonic): the vendor's Retry-After for the whole account
        self.hold_until = 0.0
        #: vendor calls answered "too many" (429 or the vendor's busy code) and all calls, for benchmarks
        self.pushed_back = 0
        self.calls = 0
        self._gauge = CALL_LIMIT.labels(vendor)
        self._gauge.set(self.adaptive.limit)

    @property
    def limit(self) -> int:
        return self.adaptive.limit

    @property
    def ceiling(self) -> int:
        return self.adaptive.settings.ceiling

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        operation: str,
        deadline: float | None = None,
        whole: bool = False,
        priority: Priority = Priority.COMMAND,
        device: str | None = None,
    ) -> T:
        """Run one vendor call. ``deadline`` (epoch seconds): the command's expiry, which bounds the
        wait for a slot and the call; ``whole``: a plan of several calls, bounded by the deadline
        only; ``device``: whom it is about (for a budget or quota of one device)."""
        timeout = self.call_timeout
        await self._wait_hold(deadline)
        self.ledger.check(device=device, read=priority is Priority.READ, command=priority is Priority.COMMAND)
        try:
            if deadline is None:
                await self.slots.acquire(priority)
                limit = timeout
            else:
                limit = await self._acquire_before(deadline, priority)
                if not whole:
                    limit = min(limit, timeout)
        except BaseException:
            self.ledger.probe_done(device=device)
            raise
        outcome = "ok"
        started, since = time.perf_counter(), self.backoff.clock()
        requests = 0

        def count() -> None:
            nonlocal requests
            requests += 1
            self.ledger.spend(device)

        meter = REQUEST_METER.set(count)
        self.calls += 1
        try:
            with anyio.fail_after(limit):
                result = await fn()
            self.backoff.succeeded()
            self.ledger.vendor_answered(device=device)
            self.adaptive.succeeded(latency=time.perf_counter() - started, in_flight=self.slots.in_use, started=since)
            return result
        except VendorError as exc:
            outcome = exc.info.code.value
            self._vendor_failed(exc, since=since, device=device)
            raise
        except TimeoutError:
            outcome = "error"
            if limit >= timeout:  # not a command whose own time was nearly up
                self.backoff.failed(started=since)
                self.adaptive.overloaded(started=since, in_flight=self.slots.in_use)
            raise VendorError(
                ErrorCode.DEVICE_TIMEOUT, f"no answer from the vendor within {limit:.1f}s", maybe_executed=True
            ) from None
        except (StoreUnavailable, LeaseLost):
            outcome = "error"
            raise  # not the vendor's: the command waits for its store (twin.outage), or ends with its partition
        except Exception as exc:
            outcome = "error"
            log.exception("adapter call failed")
            raise VendorError(ErrorCode.VENDOR_ERROR, f"adapter error: {type(exc).__name__}", retryable=False) from None
        except BaseException:
            outcome = "error"
            raise
        finally:
            REQUEST_METER.reset(meter)
            self.ledger.probe_done(device=device)
            if priority is not Priority.COMMAND:
                self.ledger.read_done(requests)
            self.slots.release()
            self._gauge.set(self.adaptive.limit)
            VENDOR_CALL_SECONDS.labels(self.vendor, operation, outcome).observe(time.perf_counter() - started)

    def _vendor_failed(self, exc: VendorError, *, since: float, device: str | None) -> None:
        code = exc.info.code
        if code == ErrorCode.QUOTA_EXHAUSTED:
            wait = self.ledger.vendor_exhausted(
                device=None if exc.vendor_wide else device, retry_after=exc.info.retry_after
            )
            if exc.info.retry_after is None:
                exc.info = exc.info.model_copy(update={"retry_after": round(wait, 1), "retryable": False})
            return
        if code == ErrorCode.RATE_LIMITED:
            self.pushed_back += 1
        if exc.vendor_wide:
            self.backoff.failed(started=since, retry_after=exc.info.retry_after)
            if code in PUSH_BACK:
                self.adaptive.overloaded(started=since, in_flight=self.slots.in_use)
            if code == ErrorCode.RATE_LIMITED and exc.info.retry_after:
                self.hold_until = max(self.hold_until, time.monotonic() + exc.info.retry_after)

    async def _wait_hold(self, deadline: float | None) -> None:
        """Wait out the vendor's Retry-After for the account (within the command's time)."""
        wait = self.hold_until - time.monotonic()
        if wait <= 0:
            return
        if deadline is not None and deadline - time.time() < wait + self.send_margin:
            raise VendorError(
                ErrorCode.RATE_LIMITED,
                f"the vendor asked for no calls for {wait:.1f}s more, past this command's expiry",
                retry_after=round(wait, 1),
            )
        await anyio.sleep(wait)

    async def _acquire_before(self, deadline: float, priority: Priority) -> float:
        """A slot before ``deadline``; returns the seconds left for the call."""
        wait = deadline - time.time()
        acquired = False
        with anyio.move_on_after(max(0.0, wait)):
            await self.slots.acquire(priority)
            acquired = True
        left = deadline - time.time()
        if acquired and left < self.send_margin:
            self.slots.release()
        if not acquired or left <= 0:
            raise TooLate("the command expired waiting for a free vendor call slot")
        if left < self.send_margin:
            raise TooLate(f"not sent with {left:.2f}s left: the call would reach the vendor after the command expired")
        return left
