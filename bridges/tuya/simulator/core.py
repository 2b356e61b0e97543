"""The request pipeline of the simulated cloud: record, authenticate, inject, answer in the envelope."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridges.tuya.simulator.auth import AuthError, TokenStore, verify_signature
from bridges.tuya.simulator.fleet import Fleet, SimLock, now_ms

__all__ = ["ApiError", "Call", "RecordedCall", "SimConfig", "SimState", "endpoint"]


class ApiError(Exception):
    """A business failure answered as ``{"success": false, "code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    time: float
    headers: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    client_id: str
    client_secret: str
    project_id: str
    max_skew: float = 900.0
    ticket_lifetime: float = 300.0
    #: False: the card API answers 28841105 (project not authorized for this API)
    card_api_authorized: bool = True
    #: None: no limit; else answer 1110 beyond this many calls per second
    max_requests_per_second: int | None = None
    #: seconds every call takes (cloud latency)
    latency: float = 0.0


@dataclass
class SimState:
    config: SimConfig
    fleet: Fleet
    tokens: TokenStore
    calls: list[RecordedCall] = field(default_factory=list)
    tickets: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: cloud-wide injections: (code, remaining count, path fragment)
    injections: list[list[Any]] = field(default_factory=list)
    #: seconds every call takes (starts as the configured latency; a test makes the cloud hang)
    latency: float = field(init=False)
    #: HTTP statuses the cloud's edge answers instead of the next calls, oldest first
    http_faults: list[int] = field(default_factory=list)
    _window: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.latency = self.config.latency

    def fail_http(self, status: int = 503, *, count: int = 1) -> None:
        self.http_faults.extend([status] * count)

    def inject(self, code: int, *, count: int = 1, path_contains: str = "") -> None:
        self.injections.append([code, count, path_contains])

    def _take_injection(self, path: str) -> int | None:
        for item in self.injections:
            if item[2] in path:
                item[1] -= 1
                if item[1] <= 0:
                    self.injections.remove(item)
                return int(item[0])
        return None

    def _rate_limited(self) -> bool:
        limit = self.config.max_requests_per_second
        if limit is None:
            return False
        now = time.monotonic()
        self._window = [stamp for stamp in self._window if now - stamp < 1.0]
        if len(self._window) >= limit:
            return True
        self._window.append(now)
        return False


@dataclass
class Call:
    state: SimState
    path: dict[str, str]
    params: dict[str, str]
    body: dict[str, Any]
    lock: SimLock | None

    @property
    def device(self) -> SimLock:
        assert self.lock is not None
        return self.lock

    def param_int(self, name: str, *, default: int | None = None, low: int = 1, high: int = 1000) -> int:
        raw = self.params.get(name)
        if raw in (None, ""):
            if default is None:
                raise ApiError(1100, f"param is empty: {name}")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(1101, f"param is illegal: {name}") from None
        if not low <= value <= high:
            raise ApiError(1101, f"param is illegal: {name}")
        return value


Handler = Callable[[Call], Awaitable[Any]]


def _envelope(success: bool, **fields: Any) -> JSONResponse:
    return JSONResponse({"success": success, **fields, "t": now_ms(), "tid": secrets.token_hex(16)})


def endpoint(
    state: SimState,
    method: str,
    path: str,
    handler: Handler,
    *,
    token_call: bool = False,
    device: bool = False,
    online: bool = False,
    cards: bool = False,
    omit_result: bool = False,
) -> Route:
    """A route running ``handler`` behind the cloud's checks.

    ``device``: ``{device_id}`` must be a lock of the project (else 1106); ``online``: the call
    reaches the device, so an offline lock answers 2001 and a slow one takes its ``latency``;
    ``cards``: the card API, which needs the project's authorization and ``{project_id}``.
    """

    async def run(request: Request) -> Response:
        raw = await request.body()
        params = dict(request.query_params)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        state.calls.append(
            RecordedCall(
                method=request.method,
                path=request.url.path,
                params=params,
                body=body,
                time=time.time(),
                headers={k: v for k, v in request.headers.items() if k != "access_token"},
            )
        )
        if state.latency:
            await anyio.sleep(state.latency)
        if state.http_faults:
            # the edge in front of the API (its load balancer): no envelope, no signature check
            status = state.http_faults.pop(0)
            return PlainTextResponse(HTTPStatus(status).phrase, status_code=status)
        state.fleet.advance()
        try:
            if state._rate_limited():
                raise ApiError(1110, "too many requests")
            token = verify_signature(
                headers=request.headers,
                client_id=state.config.client_id,
                secret=state.config.client_secret,
                method=request.method,
                path=request.url.path,
                params=params,
                body=raw,
                token_call=token_call,
                max_skew=state.config.max_skew,
            )
            if not token_call:
                state.tokens.check(token)
            injected = state._take_injection(request.url.path)
            if injected is not None:
                raise ApiError(injected, "injected error")
            if not isinstance(body, dict):
                raise ApiError(1101, "param is illegal: body")
            lock = None
            if device:
                lock = state.fleet.locks.get(request.path_params.get("device_id", ""))
                if lock is None:
                    raise ApiError(1106, "permission deny")
                injection = lock.take_injection(request.url.path)
                if injection is not None:
                    raise ApiError(injection.code, injection.msg)
            if cards:
                if not state.config.card_api_authorized:
                    raise ApiError(28841105, "No permissions. This project is not authorized to call this API")
                if request.path_params.get("project_id") != state.config.project_id:
                    raise ApiError(1106, "permission deny")
            if online and lock is not None:
                if lock.latency:
                    await anyio.sleep(lock.latency)
                if not lock.online:
                    raise ApiError(2001, "device is offline")
            call = Call(state=state, path=dict(request.path_params), params=params, body=body, lock=lock)
            result = await handler(call)
        except (AuthError, ApiError) as exc:
            return _envelope(False, code=exc.code, msg=exc.msg)
        if omit_result:
            return _envelope(True)
        return _envelope(True, result=result)

    return Route(path, run, methods=[method], name=f"{method} {path}")
