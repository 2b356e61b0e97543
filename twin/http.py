"""What every vendor client shares about HTTP: the client, ``Retry-After``, and access tokens.

- :func:`make_async_client`: httpx's API over aiohttp's transport (``httpx-aiohttp``). httpx's own
  transport (httpcore) costs ~2 ms of CPU per request on these machines and slows down as
  concurrency rises (measured on 2 cores: ~400 requests/s at 10 in flight, ~240 at 100, against
  ~1,100 and ~1,550 with the aiohttp transport, on a trivial local server); with it the same
  ``httpx.AsyncClient`` API does several times the requests/s (``bench/``: command latency and
  throughput of a bridge). ``backend="httpx"`` keeps httpx's own transport; a ``transport`` given
  explicitly (a test's ``httpx.MockTransport``) always wins. Every vendor client takes one.
- :func:`parse_retry_after`: a ``Retry-After`` header in seconds, whether it carries seconds or an
  HTTP-date (RFC 9110, section 10.2.3).
- :class:`TokenRefresher`: one access token of a vendor account, fetched on first use and refreshed
  ahead of its expiry, one fetch at a time however many calls need it (single flight): callers that
  arrive during a fetch wait for it and share its token, or its failure (no stampede of retries on
  a vendor that just refused); a token the vendor refused before its time is replaced once, for
  all the callers that saw it refused.

Every request a client makes is counted by the meter of the context it runs in
(:data:`REQUEST_METER`): the vendor-call gate sets one around each call, so the budget ledger
(:mod:`twin.ledger`) counts the vendor's requests (a Tuya unlock is two, a Smartcar full read four,
a token refresh one), not the bridge's calls. The pool allows ``MAX_CONNECTIONS`` connections: the
gate's adaptive limit is what bounds concurrency, not the HTTP client's default of 100.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import anyio
import httpx

from twin.adapter import VendorError
from twin.metrics import TOKEN_REFRESHES

__all__ = [
    "DEFAULT_BACKEND",
    "MAX_CONNECTIONS",
    "REQUEST_METER",
    "HttpBackend",
    "Token",
    "TokenRefresher",
    "make_async_client",
    "parse_retry_after",
]

HttpBackend = Literal["httpx", "aiohttp"]
#: what ``make_async_client`` uses when not told (the benchmarks switch it to measure both)
DEFAULT_BACKEND: HttpBackend = "aiohttp"
#: connections of one client at most (the gate's ceiling is the real bound)
MAX_CONNECTIONS = 2048
#: called once for every request sent, in the context that sends it (None: nobody counts)
REQUEST_METER: ContextVar[Callable[[], None] | None] = ContextVar("locktwin_request_meter", default=None)


async def _count(request: httpx.Request) -> None:
    meter = REQUEST_METER.get()
    if meter is not None:
        meter()


T = TypeVar("T")


def make_async_client(
    *, transport: httpx.AsyncBaseTransport | None = None, backend: HttpBackend | None = None, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (same arguments) over the aiohttp transport unless told otherwise."""
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=64)
    if transport is None and (backend or DEFAULT_BACKEND) == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    hooks = dict(kwargs.pop("event_hooks", None) or {})
    hooks["request"] = [_count, *hooks.get("request", [])]
    kwargs.setdefault("limits", limits)
    return httpx.AsyncClient(transport=transport, event_hooks=hooks, **kwargs)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` value: delta-seconds (fractions accepted, as some
    gateways send them) or an HTTP-date, counted from ``now`` (default: the clock). None when
    absent or unreadable; never negative, never infinite."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class Token(Generic[T]):
    """A credential (``value``: the bearer string, or a record that also holds a refresh token)
    and, on the refresher's clock, when the vendor stops taking it and when to replace it."""

    value: T
    expires_at: float
    refresh_at: float

    @classmethod
    def lasting(cls, value: T, *, lifetime: float, ahead: float, since: float) -> Token[T]:
        """Valid ``lifetime`` seconds from ``since`` (when it was asked for), replaced ``ahead``
        seconds before it runs out, but never in the first half of its life."""
        expires = since + lifetime
        return cls(value, expires, expires - min(ahead, lifetime / 2))

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at

    def valid(self, now: float) -> bool:
        return now < self.expires_at


#: fetch(the current token or None) -> a new token: a grant, or a refresh of the one given
Fetch = Callable[[Token[T] | None], Awaitable[Token[T]]]


class TokenRefresher(Generic[T]):
    """Single-flight access to one account's token (see the module docstring).

    ``fetch`` asks the vendor (it is given the token being replaced, for its refresh token).
    ``overlap``: the vendor keeps an old token valid after it issued a new one (Segway: 300 s), so
    while one call refreshes, the others go on with the old token instead of waiting. ``current``:
    where the token lives when not here (a store another process may write, read on every call;
    ``fetch`` then saves what it fetched there); it may raise :class:`VendorError` (an account that
    is gone). ``clock``: the one ``Token`` times are on (tests pass their own).
    """

    def __init__(
        self,
        *,
        fetch: Fetch[T],
        vendor: str,
        overlap: bool = False,
        current: Callable[[], Token[T] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._vendor = vendor
        self._overlap = overlap
        self._source = current
        self.clock = clock
        self._token: Token[T] | None = None
        self._lock: anyio.Lock | None = None  # made in the event loop, on first use
        #: fetches started, so that a caller that waited for one knows whether it failed meanwhile
        self._started = 0
        self._failure: VendorError | None = None

    @property
    def refreshing(self) -> bool:
        """Whether a fetch is under way."""
        return self._lock is not None and self._lock.locked()

    @property
    def held(self) -> Token[T] | None:
        """The token held now, fresh or not (None before the first fetch)."""
        return self._current()

    def _current(self) -> Token[T] | None:
        return self._source() if self._source is not None else self._token

    async def get(self, *, refused: T | None = None) -> T:
        """A token to use now. ``refused``: one the vendor just refused although it was not due to
        expire; it is replaced (once, however many callers saw it refused)."""
        token = self._current()
        if refused is not None and token is not None and token.value == refused and self._source is None:
            # nobody may use it any more; its refresh token is still what the fetch needs
            self._token = token = replace(token, expires_at=-math.inf, refresh_at=-math.inf)
        now = self.clock()
        if token is not None and token.value != refused:
            if token.fresh(now):
                return token.value
            if self._overlap and token.valid(now) and self.refreshing:
                return token.value  # a refresh is under way and the vendor still takes this one
        seen = self._started
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            token = self._current()
            if token is not None and token.value != refused and token.fresh(self.clock()):
                return token.value  # fetched by the call we waited for
            if self._started != seen and self._failure is not None:
                raise _again(self._failure)  # the fetch we waited for failed: no stampede
            self._started += 1
            try:
                token = await self._fetch(token)
            except VendorError as exc:
                self._failure = exc
                TOKEN_REFRESHES.labels(vendor=self._vendor, outcome="failed").inc()
                raise
            self._failure = None
            if self._source is None:
                self._token = token
            TOKEN_REFRESHES.labels(vendor=self._vendor, outcome="ok").inc()
            return token.value


def _again(error: VendorError) -> VendorError:
    """A fresh exception with the same answer (one instance is not raised in several tasks)."""
    info = error.info
    return VendorError(
        info.code,
        info.message,
        vendor_code=info.vendor_code,
        vendor_message=info.vendor_message,
        retryable=info.retryable,
        retry_after=info.retry_after,
        maybe_executed=error.maybe_executed,
        vendor_wide=error.vendor_wide,
    )
