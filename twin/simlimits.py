"""A vendor's limits, for the simulators: calls in flight, a token bucket per API, a quota per period.

Each vendor's simulator asks :meth:`VendorLimits.admit` when a request arrives (before its latency:
a gateway refuses at once) and :meth:`VendorLimits.release` when it has answered, and turns a
:class:`Refusal` into that vendor's own answer (Smartcar's 429 body and ``Retry-After``, Tuya's
envelope codes 1110 and 28841004, HTTP 429 elsewhere): the limits are shared, the words are the
vendor's. Off by default; a test switches them with :meth:`VendorLimits.configure`, ``locktwin
simulate --max-in-flight 64 --rate 50 --quota 1000/day`` and the demo at start, and anyone at run
time with ``PUT /_sim/limits`` (:func:`with_control`).

The order of checks is a gateway's: a spent quota refuses everything (until the period's reset),
then the cap on calls in flight, then the API's bucket. Refused calls are counted (``refused``,
and ``after_exhaustion``: calls that arrived while the quota was spent), so a test can prove that a
client stopped calling instead of storming.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CONTROL_PATH",
    "Answer",
    "Endpoint",
    "LimitProfile",
    "Rate",
    "Refusal",
    "VendorLimits",
    "limit_routes",
    "limited",
    "parse_profile",
    "with_control",
]

#: where a simulator served with :func:`with_control` shows and takes its limits
CONTROL_PATH = "/_sim/limits"
#: the bucket that applies to every API without one of its own
ANY_API = "*"
PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "month": 30 * 86400.0}

Kind = Literal["quota", "in_flight", "rate"]


Endpoint = Callable[[Request], Awaitable[Response]]
#: the vendor's own answer to a refused call
Answer = Callable[["Refusal", Request], Response]


@dataclass(frozen=True, kw_only=True)
class Rate:
    """A token bucket: ``per_second`` calls sustained, ``burst`` at once (default: one second's)."""

    per_second: float
    burst: float | None = None

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.per_second)


@dataclass(frozen=True, kw_only=True)
class LimitProfile:
    max_in_flight: int | None = None
    #: per API name (each simulator names its APIs), or ``"*"`` for every API
    rates: Mapping[str, Rate] = field(default_factory=dict)
    #: calls per ``quota_period`` seconds, counted from when the profile was set
    quota: int | None = None
    quota_period: float = 86400.0


@dataclass(frozen=True)
class Refusal:
    kind: Kind
    api: str
    #: seconds until a call like this one would be admitted
    retry_after: float


@dataclass
class _Bucket:
    rate: Rate
    tokens: float
    at: float


class VendorLimits:
    """The limits of one simulated vendor account (see the module doc)."""

    def __init__(self, profile: LimitProfile | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.configure(profile or LimitProfile())

    def configure(self, profile: LimitProfile) -> None:
        """Switch to ``profile``: buckets full, the quota's period starting now, counters at zero."""
        now = self.clock()
        self.profile = profile
        self._buckets: dict[str, _Bucket] = {}
        self._period_start = now
        self.in_flight = 0
        self.peak_in_flight = 0
        self.admitted = 0
        self.quota_spent = 0
        self.refused: Counter[Kind] = Counter()
        #: when (epoch seconds) the latest refusals were answered, and why
        self.refused_at: deque[tuple[float, Kind]] = deque(maxlen=1000)
        self.after_exhaustion = 0

    @property
    def active(self) -> bool:
        p = self.profile
        return p.max_in_flight is not None or bool(p.rates) or p.quota is not None

    def admit(self, api: str) -> Refusal | None:
        """A call to ``api`` arrived: None when it may go on (then :meth:`release` it), else why not."""
        profile = self.profile
        if not self.active:
            self.admitted += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return None
        now = self.clock()
        if profile.quota is not None:
            periods = math.floor((now - self._period_start) / profile.quota_period)
            if periods > 0:
                self._period_start += periods * profile.quota_period
                self.quota_spent = 0
            if self.quota_spent >= profile.quota:
                self.after_exhaustion += 1
                reset = self._period_start + profile.quota_period - now
                return self._refuse(Refusal("quota", api, reset))
        if profile.max_in_flight is not None and self.in_flight >= profile.max_in_flight:
            return self._refuse(Refusal("in_flight", api, 0.0))
        bucket = self._bucket(api, now)
        if bucket is not None:
            if bucket.tokens < 1.0:
                return self._refuse(Refusal("rate", api, (1.0 - bucket.tokens) / bucket.rate.per_second))
            bucket.tokens -= 1.0
        if profile.quota is not None:
            self.quota_spent += 1
        self.admitted += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return None

    def release(self) -> None:
        """An admitted call has been answered."""
        self.in_flight = max(0, self.in_flight - 1)

    def _refuse(self, refusal: Refusal) -> Refusal:
        self.refused[refusal.kind] += 1
        self.refused_at.append((time.time(), refusal.kind))
        return refusal

    def _bucket(self, api: str, now: float) -> _Bucket | None:
        key = api if api in self.profile.rates else ANY_API
        rate = self.profile.rates.get(key)
        if rate is None:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate=rate, tokens=rate.capacity, at=now)
        bucket.tokens = min(rate.capacity, bucket.tokens + (now - bucket.at) * rate.per_second)
        bucket.at = now
        return bucket

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /_sim/limits`` shows: the profile and the counters."""
        p = self.profile
        return {
            "max_in_flight": p.max_in_flight,
            "rates": {api: {"per_second": r.per_second, "burst": r.capacity} for api, r in p.rates.items()},
            "quota": p.quota,
            "quota_period": p.quota_period,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "admitted": self.admitted,
            "quota_spent": self.quota_spent,
            "refused": dict(self.refused),
            "after_exhaustion": self.after_exhaustion,
        }


def limited(endpoint: Endpoint, limits: VendorLimits, *, api: str, answer: Answer) -> Endpoint:
    """``endpoint`` behind ``limits``: a refused call gets the vendor's ``answer`` at once."""

    async def run(request: Request) -> Response:
        refusal = limits.admit(api)
        if refusal is not None:
            return answer(refusal, request)
        try:
            return await endpoint(request)
        finally:
            limits.release()

    return run


def limit_routes(
    routes: Sequence[BaseRoute], limits: VendorLimits, *, answer: Answer, names: Mapping[str, str] | None = None
) -> list[BaseRoute]:
    """Every :class:`~starlette.routing.Route` of ``routes`` behind ``limits``; an API is named by
    ``names`` (path template -> name), else by its path template."""
    out: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route):
            api = (names or {}).get(route.path, route.path)
            wrapped = limited(route.endpoint, limits, api=api, answer=answer)
            out.append(Route(route.path, wrapped, methods=sorted(route.methods or ()), name=route.name))
        else:
            out.append(route)
    return out


def parse_profile(doc: Mapping[str, Any]) -> LimitProfile:
    """A profile from JSON or flags: ``{"max_in_flight": 64, "rate": 50, "rates": {"status": 4},
    "quota": "1000/day"}`` (``rate`` applies to every API; a quota is ``N/period`` or ``N``)."""
    rates = {api: Rate(per_second=float(v)) for api, v in dict(doc.get("rates") or {}).items()}
    if doc.get("rate") is not None:
        rates[ANY_API] = Rate(per_second=float(doc["rate"]), burst=_optional(doc.get("burst")))
    quota, period = None, 86400.0
    raw = doc.get("quota")
    if raw is not None:
        count, _, per = str(raw).partition("/")
        quota = int(count)
        if per:
            if per not in PERIODS:
                raise ValueError(f"quota period must be one of {', '.join(PERIODS)}")
            period = PERIODS[per]
    if doc.get("quota_period") is not None:
        period = float(doc["quota_period"])
    in_flight = doc.get("max_in_flight")
    return LimitProfile(
        max_in_flight=None if in_flight is None else int(in_flight), rates=rates, quota=quota, quota_period=period
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def with_control(app: ASGIApp, limits: VendorLimits) -> ASGIApp:
    """``app`` plus ``GET``/``PUT`` :data:`CONTROL_PATH` (the profile as :func:`parse_profile` reads it)."""

    async def control(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CONTROL_PATH:
            await app(scope, receive, send)
            return
        status = 200
        if scope["method"] == "PUT":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            try:
                limits.configure(parse_profile(json.loads(body or b"{}")))
            except (ValueError, TypeError) as exc:
                status, answer = 400, {"error": str(exc)}
            else:
                answer = limits.snapshot()
        else:
            answer = limits.snapshot()
        payload = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return control
