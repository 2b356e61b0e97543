"""The vendor-call gate: every call a bridge makes to its vendor goes through here.

It owns what every call needs and nothing else does:

- the **concurrency limit** of the vendor account (``max_in_flight`` calls at once), and the share
  of it that background reads (polling, ``/get``) may hold: half, at least one, so that a command
  finds a slot within one read's time;
- the **deadline**: a command's time runs while it waits for a slot, a command that expired
  waiting, or has less than ``send_margin`` left once it has a slot, never reaches the vendor
  (the call would arrive after the command's expiry), and a call gets only what is left of it;
- the **timeout** of one call (``call_timeout``), after which the call is one "that got no answer"
  (``maybe_executed``: the vendor may still act on it);
- the **vendor-wide backoff** (:mod:`twin.backoff`): every outcome is reported there;
- the **metrics** (``locktwin_vendor_call_seconds``) and the **translation** of anything an adapter
  raises that is not a :class:`~twin.adapter.VendorError` into ``VENDOR_ERROR``.

Exceptions::

    VendorError     every failure leaves the gate as one (DEVICE_TIMEOUT when the call got no
                    answer, VENDOR_ERROR for an adapter's own bug)
    TooLate         a VendorError (EXPIRED): the call was not started, its command's time is up
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.backoff import VendorBackoff
from twin.metrics import VENDOR_CALL_SECONDS
from twin.store import StoreUnavailable

__all__ = ["TooLate", "VendorGate"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TooLate(VendorError):
    """A command's call was not started: its deadline passed waiting for a slot, or less than the
    send margin was left. The vendor never got it."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EXPIRED, message, retryable=False)


class VendorGate:
    def __init__(self, *, vendor: str, limit: int, call_timeout: float, send_margin: float = 0.0) -> None:
        self.vendor = vendor
        self.call_timeout = call_timeout
        self.send_margin = send_margin
        self.limiter = anyio.CapacityLimiter(limit)
        #: slots of the limit that background reads may hold at once (commands have the rest)
        self.read_slots = anyio.Semaphore(max(1, limit // 2))
        #: whether the vendor fails as a whole: background reads wait while it does (twin.polling)
        self.backoff = VendorBackoff()

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        operation: str,
        deadline: float | None = None,
        whole: bool = False,
    ) -> T:
        """Run one vendor call. ``deadline`` (epoch seconds): the command's expiry, which bounds the
        wait for a slot and the call; ``whole``: a plan of several calls, bounded by the deadline only."""
        timeout = self.call_timeout
        if deadline is None:
            await self.limiter.acquire()
            limit = timeout
        else:
            limit = await self._acquire_before(deadline)
            if not whole:
                limit = min(limit, timeout)
        outcome = "ok"
        started, since = time.perf_counter(), self.backoff.clock()
        try:
            with anyio.fail_after(limit):
                result = await fn()
            self.backoff.succeeded()
            return result
        except VendorError as exc:
            outcome = exc.info.code.value
            if exc.vendor_wide:
                self.backoff.failed(started=since, retry_after=exc.info.retry_after)
            raise
        except TimeoutError:
            outcome = "error"
            if limit >= timeout:  # not a command whose own time was nearly up
                self.backoff.failed(started=since)
            raise VendorError(
                ErrorCode.DEVICE_TIMEOUT, f"no answer from the vendor within {limit:.1f}s", maybe_executed=True
            ) from None
        except StoreUnavailable:
            outcome = "error"
            raise  # not the vendor's: the command waits for its store (twin.outage)
        except Exception as exc:
            outcome = "error"
            log.exception("adapter call failed")
            raise VendorError(ErrorCode.VENDOR_ERROR, f"adapter error: {type(exc).__name__}", retryable=False) from None
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.limiter.release()
            VENDOR_CALL_SECONDS.labels(self.vendor, operation, outcome).observe(time.perf_counter() - started)

    async def _acquire_before(self, deadline: float) -> float:
        """A slot before ``deadline``; returns the seconds left for the call."""
        wait = deadline - time.time()
        acquired = False
        with anyio.move_on_after(max(0.0, wait)):
            await self.limiter.acquire()
            acquired = True
        left = deadline - time.time()
        if acquired and left < self.send_margin:
            self.limiter.release()
        if not acquired or left <= 0:
            raise TooLate("the command expired waiting for a free vendor call slot")
        if left < self.send_margin:
            raise TooLate(f"not sent with {left:.2f}s left: the call would reach the vendor after the command expired")
        return left
