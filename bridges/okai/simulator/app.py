"""The simulated OKAI cloud: Starlette routes speaking the vendor's wire format.

Checks in the order a real gateway would: HTTP faults, userKey, then (signing on) timestamp freshness
and the signature, then the parameters, the device, and finally the scooter itself. Every answer is
the vendor envelope ``{"code", "msg", "data"}`` with HTTP 200, except injected HTTP failures.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bridges.okai.models import (
    AUTH_PARAMS,
    OkaiCode,
    SwitchLockRequest,
)
from bridges.okai.signing import SignParams, sign
from bridges.okai.simulator.limits import API_NAMES, refusal_answer
from twin.simlimits import VendorLimits, limit_routes

if TYPE_CHECKING:
    from bridges.okai.simulator.fleet import Fleet

__all__ = [
    "Call",
    "CloudConfig",
    "TimestampCheck",
    "build_app",
]

TimestampCheck = Literal["signed", "always", "never"]

#: the cloud's endpoints as the document and public client code spell them (not the client's table:
#: a client that calls a wrong path must meet a 404 here, as it would at OKAI)
SWITCH_LOCK = "/scooter/control/switchLock"
STATUS = "/scooter/query/status"
LOCATION = "/scooter/query/location"

_MESSAGES: dict[OkaiCode, str] = {
    OkaiCode.SUCCESS: "success",
    OkaiCode.PARAM_ERROR: "parameter error",
    OkaiCode.USER_KEY_INVALID: "userKey is invalid",
    OkaiCode.SIGN_ERROR: "sign verification failed",
    OkaiCode.TIMESTAMP_EXPIRED: "timestamp expired",
    OkaiCode.DEVICE_NOT_FOUND: "device does not exist",
    OkaiCode.DEVICE_OFFLINE: "device offline",
    OkaiCode.DEVICE_REFUSED: "device refused the command",
}


@dataclass(frozen=True, kw_only=True)
class Call:
    """One recorded request (``params`` merges query, body and identity headers)."""

    method: str
    path: str
    params: dict[str, Any]
    auth_in: Literal["params", "headers"]
    at: float
    code: int | None
    #: when the request arrived (``at`` is when it was answered, after any injected latency)
    received_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    user_key: str
    sign_key: str | None
    sign_params: SignParams
    max_skew: float
    timestamp_check: TimestampCheck
    record_calls: bool = True


class _Refusal(Exception):
    def __init__(self, code: OkaiCode, msg: str | None = None) -> None:
        super().__init__(code)
        self.code = int(code)
        self.msg = msg or _MESSAGES[code]


def envelope(code: int, msg: str, data: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data})


def build_app(
    *, config: CloudConfig, fleet: Fleet, calls: list[Call], base_path: str, limits: VendorLimits | None = None
) -> Starlette:
    async def handle(request: Request) -> Response:
        received_at = time.time()
        path = "/" + request.url.path.removeprefix(base_path).lstrip("/")
        params, auth_in = await _params(request)
        fault = fleet.take_http_fault()
        imei = params.get("imei")
        scooter = fleet.scooters.get(str(imei)) if imei is not None else None
        delay = fleet.latency + (scooter.latency if scooter is not None else 0.0)
        if delay > 0:
            await anyio.sleep(delay)
        code: int | None = None
        try:
            if fault is not None:
                headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                return PlainTextResponse(HTTPStatus(fault.status).phrase, status_code=fault.status, headers=headers)
            if scooter is not None:
                scooter.advance(time.monotonic())  # lazily: only the scooter this request is about
            _authenticate(config, params)
            injected = fleet.take_fault(path, None if imei is None else str(imei))
            if injected is not None:
                code = injected.code
                return envelope(injected.code, injected.msg)
            data = _operate(fleet, path, params)
            code = int(OkaiCode.SUCCESS)
            return envelope(code, _MESSAGES[OkaiCode.SUCCESS], data)
        except _Refusal as refusal:
            code = refusal.code
            return envelope(refusal.code, refusal.msg)
        finally:
            if config.record_calls:
                calls.append(
                    Call(
                        method=request.method,
                        path=path,
                        params=params,
                        auth_in=auth_in,
                        at=time.time(),
                        code=code,
                        received_at=received_at,
                    )
                )

    routes: list[BaseRoute] = [
        Route(SWITCH_LOCK, handle, methods=["POST"]),
        Route(STATUS, handle, methods=["GET"]),
        Route(LOCATION, handle, methods=["GET"]),
    ]
    if limits is not None:  # the account's limits (twin.simlimits), answered as OKAI would (limits.py)
        routes = limit_routes(routes, limits, answer=refusal_answer, names=API_NAMES)
    return Starlette(routes=[Mount(base_path, routes=routes)] if base_path else routes)


async def _params(request: Request) -> tuple[dict[str, Any], Literal["params", "headers"]]:
    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        params.update(body if isinstance(body, dict) else {"__invalid_body__": True})
    auth_in: Literal["params", "headers"] = "params"
    for name in AUTH_PARAMS:
        value = request.headers.get(name)
        if value is not None:
            params[name] = value
            auth_in = "headers"
    return params, auth_in


def _authenticate(config: CloudConfig, params: dict[str, Any]) -> None:
    user_key = params.get("userKey")
    if not isinstance(user_key, str) or not hmac.compare_digest(user_key, config.user_key):
        raise _Refusal(OkaiCode.USER_KEY_INVALID)
    signing = config.sign_key is not None
    check = config.timestamp_check
    if check == "always" or (check == "signed" and signing):
        _check_timestamp(params.get("timestamp"), config.max_skew)
    if config.sign_key is not None:
        given = params.get("sign")
        if not isinstance(given, str) or not given:
            raise _Refusal(OkaiCode.SIGN_ERROR, "sign is required")
        expected = sign(params, config.sign_key, config.sign_params)
        if not hmac.compare_digest(given.lower(), expected):
            raise _Refusal(OkaiCode.SIGN_ERROR)


def _check_timestamp(value: Any, max_skew: float) -> None:
    try:
        stamp = int(str(value))
    except ValueError:
        raise _Refusal(OkaiCode.PARAM_ERROR, "timestamp is required") from None
    seconds = stamp / 1000 if stamp > 10**11 else float(stamp)  # milliseconds or seconds
    if abs(time.time() - seconds) > max_skew:
        raise _Refusal(OkaiCode.TIMESTAMP_EXPIRED)


def _operate(fleet: Fleet, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
    if "__invalid_body__" in params:
        raise _Refusal(OkaiCode.PARAM_ERROR, "body must be a JSON object")
    imei = params.get("imei")
    if not imei:
        raise _Refusal(OkaiCode.PARAM_ERROR, "imei is required")
    scooter = fleet.scooters.get(str(imei))
    if scooter is None:
        raise _Refusal(OkaiCode.DEVICE_NOT_FOUND)
    if path == STATUS:
        return scooter.status().model_dump(mode="json")
    if path == LOCATION:
        return scooter.location().model_dump(mode="json")
    try:
        request = SwitchLockRequest.model_validate(params)
    except ValidationError:
        raise _Refusal(OkaiCode.PARAM_ERROR, "imei, operate (lock|unlock) and expireTime >= 1 required") from None
    if not scooter.online:
        raise _Refusal(OkaiCode.DEVICE_OFFLINE)
    if scooter.refuse:
        raise _Refusal(OkaiCode.DEVICE_REFUSED)
    scooter.accept(request.operate, request.expireTime, time.monotonic())
    return None
