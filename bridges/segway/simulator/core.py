"""The simulated Segway Discovery cloud: tokens, fault knobs, recorded calls, physics and pushes."""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridges.segway.simulator.app import build_app
from bridges.segway.simulator.fleet import Fleet, Vehicle
from bridges.segway.simulator.pusher import DEFAULT_RETRY_DELAY, Pusher, PushRecord
from twin.asgi import ServedApp, serve_asgi
from twin.simlimits import LimitProfile, VendorLimits

__all__ = [
    "DEFAULT_CLIENT_ID",
    "Call",
    "SegwaySimulator",
]

DEFAULT_CLIENT_ID = "E20081"
DEFAULT_TOKEN_LIFETIME = 43199.0
#: the document: old and new tokens are both accepted for 300 s
DEFAULT_TOKEN_OVERLAP = 300.0


@dataclass(frozen=True)
class Call:
    """One request the simulated cloud received."""

    method: str
    path: str
    #: query parameters merged with the JSON or form body
    params: dict[str, Any]
    at: float


class SegwaySimulator:
    """A faithful Segway cloud over simulated vehicles. Serve ``.app`` (or use :meth:`serve`)."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        devices: int | Sequence[str] = 3,
        fleet: Fleet | None = None,
        bolt_seconds: float = 0.3,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        token_overlap: float = DEFAULT_TOKEN_OVERLAP,
        latency: float = 0.0,
        webhook_url: str | None = None,
        push_retry_delay: float = DEFAULT_RETRY_DELAY,
        status_push_interval: float = 10.0,
        location_push_interval: float = 10.0,
        locked_location_push_interval: float = 900.0,
        tick: float = 0.1,
        limits: LimitProfile | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret if client_secret is not None else secrets.token_hex(16)
        if fleet is None:
            if isinstance(devices, int):
                fleet = Fleet.generate(devices, bolt_seconds=bolt_seconds)
            else:
                fleet = Fleet(Vehicle(iot_code=d, bolt_seconds=bolt_seconds) for d in devices)
        self.fleet = fleet
        self.token_lifetime = token_lifetime
        self.token_overlap = token_overlap
        self.latency = latency
        #: the document: status every 10 s while riding (and at once when lock or link change)
        self.status_push_interval = status_push_interval
        #: the document: position every 10 s unlocked, every 900 s locked
        self.location_push_interval = location_push_interval
        self.locked_location_push_interval = locked_location_push_interval
        self.tick = tick
        #: every API call answered 15990 (account restricted)
        self.restricted = False
        #: when set, token requests wait for this event (tests hold a refresh in flight)
        self.token_gate: anyio.Event | None = None
        self.calls: list[Call] = []
        self.tokens: dict[str, float] = {}
        self.pusher = Pusher(
            webhook_url=webhook_url,
            client_id=client_id,
            client_secret=self.client_secret,
            retry_delay=push_retry_delay,
        )
        #: the account's limits (off unless ``limits`` is given; ``.limits.configure(...)`` switches them)
        self.limits = VendorLimits(limits)
        self.app = build_app(self)
        self._http_faults: deque[tuple[int, float | None]] = deque()
        self._stalls: deque[float] = deque()
        self._pushed: dict[str, tuple[int, bool, bool, float]] = {}
        self._located: dict[str, float] = {}
        self._tg: TaskGroup | None = None
        self._wakeup: anyio.Event | None = None

    # ---- knobs ----------------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str | None:
        return self.pusher.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self.pusher.webhook_url = url

    @property
    def pushes(self) -> list[PushRecord]:
        return self.pusher.records

    def fail_next(self, status: int = 503, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` (a 5xx from the cloud's edge, or a
        429 from its rate limiter, with ``Retry-After: retry_after`` seconds when given)."""
        self._http_faults.extend([(status, retry_after)] * times)

    def stall_next(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` requests for ``seconds`` before answering (client timeouts)."""
        self._stalls.extend([seconds] * times)

    def revoke_tokens(self) -> None:
        """Every issued token stops being valid (the next call gets 15101)."""
        self.tokens.clear()

    # ---- inspection -----------------------------------------------------------------------------

    def calls_to(self, path: str, *, iot_code: str | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.path == path and (iot_code is None or str(c.params.get("iotCode")) == iot_code)
        ]

    # ---- used by the app ------------------------------------------------------------------------

    def record(self, request: Request, params: dict[str, Any]) -> None:
        safe = {k: v for k, v in params.items() if k != "client_secret"}
        self.calls.append(Call(request.method, request.url.path, safe, time.time()))

    async def before_answer(self) -> None:
        delay = self.latency + (self._stalls.popleft() if self._stalls else 0.0)
        if delay > 0:
            await anyio.sleep(delay)

    def take_http_fault(self) -> Response | None:
        """The answer of the next injected HTTP failure, if one is due."""
        if not self._http_faults:
            return None
        status, retry_after = self._http_faults.popleft()
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        error = "too_many_requests" if status == 429 else "server_error"
        return JSONResponse({"error": error}, status_code=status, headers=headers)

    def issue_token(self) -> tuple[str, float | int]:
        now = time.monotonic()
        for old, expires in list(self.tokens.items()):
            if expires <= now:
                del self.tokens[old]
            else:
                self.tokens[old] = min(expires, now + self.token_overlap)
        token = str(uuid.uuid4())
        self.tokens[token] = now + self.token_lifetime
        lifetime = self.token_lifetime
        return token, int(lifetime) if lifetime == int(lifetime) else lifetime

    def bearer_valid(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        expires = self.tokens.get(token.strip())
        return expires is not None and time.monotonic() < expires

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # ---- physics and pushes -----------------------------------------------------------------------

    async def advance(self) -> None:
        """Bring every vehicle up to now and push what changed to the webhook (if any)."""
        now = time.monotonic()
        for vehicle in self.fleet:
            vehicle.settle()
            if self.webhook_url is None:
                continue
            key = vehicle.iot_code
            revision, locked, online, at = self._pushed.setdefault(
                key, (vehicle.revision, vehicle.locked, vehicle.online, now)
            )
            flipped = (locked, online) != (vehicle.locked, vehicle.online)
            if flipped or (revision != vehicle.revision and now - at >= self.status_push_interval):
                self._pushed[key] = (vehicle.revision, vehicle.locked, vehicle.online, now)
                await self._send(self.pusher.prepare("/v2/vehicle/status", self._status_fields(vehicle)))
            every = self.locked_location_push_interval if vehicle.locked else self.location_push_interval
            if vehicle.online and now - self._located.setdefault(key, now) >= every:
                self._located[key] = now
                await self._send(self.pusher.prepare("/v2/vehicle/location", self._location_fields(vehicle)))

    async def _send(self, record: PushRecord) -> None:
        if self._tg is not None:
            self._tg.start_soon(self.pusher.deliver, record)
        else:
            await self.pusher.deliver(record)

    @staticmethod
    def _status_fields(vehicle: Vehicle) -> dict[str, Any]:
        return {k: v for k, v in vehicle.status().items() if k != "speedMode"}

    @staticmethod
    def _location_fields(vehicle: Vehicle) -> dict[str, Any]:
        fields = vehicle.location()
        fields["locationStatus"] = "valid" if vehicle.has_fix else "invalid"
        return fields

    async def push_status(self, iot_code: str, **overrides: Any) -> PushRecord:
        """Push the vehicle's status now (fields may be overridden, e.g. an old ``statusUtcTime``)."""
        vehicle = self.fleet[iot_code]
        vehicle.settle()
        record = self.pusher.prepare("/v2/vehicle/status", {**self._status_fields(vehicle), **overrides})
        await self.pusher.deliver(record)
        return record

    async def push_location(self, iot_code: str, **overrides: Any) -> PushRecord:
        vehicle = self.fleet[iot_code]
        vehicle.settle()
        record = self.pusher.prepare("/v2/vehicle/location", {**self._location_fields(vehicle), **overrides})
        await self.pusher.deliver(record)
        return record

    async def push_alert(self, iot_code: str, code: int, *, appearing: bool = True) -> PushRecord:
        fields = {
            "iotCode": iot_code,
            "statusUtcTime": int(time.time()),
            "alertStatus": 0 if appearing else 1,
            "code": code,
        }
        record = self.pusher.prepare("/v2/vehicle/alert", fields)
        await self.pusher.deliver(record)
        return record

    async def push_fault(self, iot_code: str, code: int, *, appearing: bool = True) -> PushRecord:
        fields = {
            "iotCode": iot_code,
            "statusUtcTime": int(time.time()),
            "faultStatus": 0 if appearing else 1,
            "code": code,
        }
        record = self.pusher.prepare("/v2/vehicle/fault", fields)
        await self.pusher.deliver(record)
        return record

    # ---- serving --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            with anyio.move_on_after(self.tick):
                await self._wakeup.wait()
            if self.webhook_url is not None:  # without pushes, requests settle vehicles lazily
                await self.advance()

    @asynccontextmanager
    async def serve(self, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[ServedApp]:
        """Serve the cloud on a real socket and run physics and pushes until the block exits."""
        async with serve_asgi(self.app, host=host, port=port) as served, anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._run)
            try:
                yield served
            finally:
                self._tg = None
                self._wakeup = None
                tg.cancel_scope.cancel()
