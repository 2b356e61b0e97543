"""The simulated Smartcar cloud as a Starlette app: ``/oauth/*`` and ``/v2.0/*`` on one server."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .fleet import ERRORS, Fleet, InjectedError, SimVehicle
from .limits import SmartcarLimits
from .oauth import Grant, OAuthServer, TokenError

__all__ = ["RecordedCall", "build_app"]

MILE_KM = 1.609344
DOCS = "https://smartcar.com/docs/errors/api-errors/"


@dataclass(frozen=True, kw_only=True)
class RecordedCall:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    at: float
    vehicle_id: str | None = None
    status: int = 0


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error_response(error: InjectedError, *, description: str | None = None) -> JSONResponse:
    """An error exactly in Smartcar's v2 shape, with ``Content-Type: application/json``."""
    request_id = str(uuid.uuid4())
    body = {
        "type": error.type,
        "code": error.code,
        "description": description or error.description,
        "docURL": f"{DOCS}{error.type.lower().replace('_', '-')}"
        + (f"#{error.code.lower().replace('_', '-')}" if error.code else ""),
        "statusCode": error.status,
        "requestId": request_id,
        "resolution": {"type": error.resolution},
        "suggestedUserMessage": None,
        "detail": None,
    }
    headers = {"SC-Request-Id": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after + 0.499)))
    return JSONResponse(body, status_code=error.status, headers=headers)


def _refuse(error: str | InjectedError, **kwargs: Any) -> _Refusal:
    spec = ERRORS[error] if isinstance(error, str) else error
    return _Refusal(error_response(spec, **kwargs))


class SmartcarCloud:
    """Request handling over a fleet and an authorization server."""

    def __init__(self, *, fleet: Fleet, oauth: OAuthServer, latency: float = 0.0) -> None:
        self.fleet = fleet
        self.oauth = oauth
        self.latency = latency
        self.calls: list[RecordedCall] = []

    async def _record(
        self, request: Request, vehicle_id: str | None, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        body: Any = None
        raw = await request.body()
        if raw and request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
        elif raw:
            body = {k: v for k, v in (await request.form()).items() if k not in {"code", "refresh_token"}}
        started = time.monotonic()
        if self.latency:
            await anyio.sleep(self.latency)
        try:
            response = await handle()
        except _Refusal as refusal:
            response = refusal.response
        self.calls.append(
            RecordedCall(
                method=request.method,
                path=request.url.path,
                params=dict(request.query_params),
                body=body,
                at=started,
                vehicle_id=vehicle_id,
                status=response.status_code,
            )
        )
        return response

    # -- OAuth -------------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        async def handle() -> Response:
            client_id, secret = _basic(request)
            form = {k: str(v) for k, v in (await request.form()).items()}
            try:
                self.oauth.check_client(client_id, secret)
                return JSONResponse(self.oauth.exchange(form))
            except TokenError as exc:
                return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status)

        return await self._record(request, None, handle)

    async def authorize(self, request: Request) -> Response:
        """Connect, approved at once by the first user (or ``?user=``) with the requested scope."""
        params = request.query_params
        redirect_uri = params.get("redirect_uri") or self.oauth.redirect_uri or "/"
        if params.get("client_id") != self.oauth.client_id:
            return JSONResponse({"error": "invalid_client", "error_description": "Unknown client_id."}, 400)
        user_id = params.get("user") or self.fleet.users[0]
        scope = frozenset(params.get("scope", "").split()) or None
        code = self.oauth.issue_code(user_id, redirect_uri=redirect_uri, **({"scope": scope} if scope else {}))
        query = {"code": code, **({"state": params["state"]} if "state" in params else {})}
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    # -- API ---------------------------------------------------------------------------------------

    def _grant(self, request: Request) -> Grant:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        grant = self.oauth.grant_of(token) if scheme.lower() == "bearer" and token else None
        if grant is None:
            raise _refuse("AUTHENTICATION")
        return grant

    def _vehicle(self, request: Request, grant: Grant, scope: str | None) -> SimVehicle:
        vehicle = self.fleet.vehicles.get(request.path_params["vehicle_id"])
        if vehicle is None or vehicle.user_id != grant.user_id:
            raise _refuse(InjectedError(404, "RESOURCE_NOT_FOUND", "PATH", "The requested resource does not exist."))
        if scope is not None and scope not in grant.scope:
            raise _refuse("PERMISSION")
        return vehicle

    async def _vehicle_call(
        self,
        request: Request,
        scope: str | None,
        answer: Callable[[SimVehicle, float], dict[str, Any]],
        *,
        wakes: bool = True,
    ) -> Response:
        vehicle_id = request.path_params["vehicle_id"]

        async def handle() -> Response:
            grant = self._grant(request)
            vehicle = self._vehicle(request, grant, scope)
            now = time.monotonic()
            self.fleet.advance(now)
            if vehicle.latency:
                await anyio.sleep(vehicle.latency)
            wait = self.fleet.rate_check(vehicle, now)
            if wait is not None:
                raise _refuse(
                    InjectedError(
                        429,
                        "RATE_LIMIT",
                        "VEHICLE",
                        "You have reached the throttling rate limit for this vehicle.",
                        "RETRY_LATER",
                        wait,
                    )
                )
            if vehicle.injected:
                error = vehicle.injected.popleft()
                if error.retry_after is not None:
                    vehicle.blocked_until = now + error.retry_after
                raise _refuse(error)
            if wakes:
                vehicle.last_call = now
                if not vehicle.online:
                    raise _refuse("UNREACHABLE")
                if vehicle.asleep:
                    self.fleet.wake(vehicle, now)
                    raise _refuse("ASLEEP")
            body = answer(vehicle, now)
            return self._ok(request, body, vehicle)

        return await self._record(request, vehicle_id, handle)

    def _ok(self, request: Request, body: dict[str, Any], vehicle: SimVehicle | None = None) -> Response:
        now = datetime.now(UTC)
        age = now - timedelta(seconds=vehicle.data_lag if vehicle else 0.0)
        headers = {
            "SC-Request-Id": str(uuid.uuid4()),
            "SC-Fetched-At": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if vehicle is not None:
            headers["SC-Data-Age"] = age.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if request.method == "GET":
            headers["SC-Unit-System"] = _units(request)
        return JSONResponse(body, headers=headers)

    async def user(self, request: Request) -> Response:
        async def handle() -> Response:
            return self._ok(request, {"id": self._grant(request).user_id})

        return await self._record(request, None, handle)

    async def vehicles(self, request: Request) -> Response:
        async def handle() -> Response:
            grant = self._grant(request)
            try:
                limit = int(request.query_params.get("limit", "10"))
                offset = int(request.query_params.get("offset", "0"))
            except ValueError:
                raise _refuse(
                    InjectedError(400, "VALIDATION", "PARAMETER", "limit and offset must be integers.")
                ) from None
            if not 1 <= limit <= 50 or offset < 0:
                raise _refuse(InjectedError(400, "VALIDATION", "PARAMETER", "limit must be 1..50, offset >= 0."))
            ids = [v.id for v in self.fleet.owned_by(grant.user_id)]
            page = ids[offset : offset + limit]
            return self._ok(request, {"vehicles": page, "paging": {"count": len(ids), "offset": offset}})

        return await self._record(request, None, handle)

    async def attributes(self, request: Request) -> Response:
        return await self._vehicle_call(
            request,
            "read_vehicle_info",
            lambda v, now: {"id": v.id, "make": v.make, "model": v.model, "year": v.year},
            wakes=False,
        )

    async def security(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._set_security(request)

        def answer(v: SimVehicle, now: float) -> dict[str, Any]:
            return {
                "isLocked": v.locked,
                **{
                    group: [{"type": name, "status": status} for name, status in items.items()]
                    for group, items in v.openings.items()
                },
            }

        return await self._vehicle_call(request, "read_security", answer)

    async def _set_security(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        action = payload.get("action") if isinstance(payload, dict) else None

        def answer(v: SimVehicle, now: float) -> dict[str, Any]:
            if action not in {"LOCK", "UNLOCK"}:
                raise _refuse(InjectedError(400, "VALIDATION", "PARAMETER", "action must be one of LOCK or UNLOCK."))
            if v.riding:
                raise _refuse("IN_MOTION")
            self.fleet.start_bolt(v, locked=action == "LOCK", now=now)
            return {"status": "success", "message": "Successfully sent request to vehicle"}

        return await self._vehicle_call(request, "control_security", answer)

    async def battery(self, request: Request) -> Response:
        def answer(v: SimVehicle, now: float) -> dict[str, Any]:
            if not v.electric:
                raise _refuse("COMPATIBILITY")
            km = v.range_km / (MILE_KM if _units(request) == "imperial" else 1.0)
            return {"percentRemaining": v.percent_remaining, "range": round(km, 1)}

        return await self._vehicle_call(request, "read_battery", answer)

    async def location(self, request: Request) -> Response:
        return await self._vehicle_call(
            request, "read_location", lambda v, now: {"latitude": v.latitude, "longitude": v.longitude}
        )

    async def odometer(self, request: Request) -> Response:
        def answer(v: SimVehicle, now: float) -> dict[str, Any]:
            km = v.odometer_km / (MILE_KM if _units(request) == "imperial" else 1.0)
            return {"distance": round(km, 1)}

        return await self._vehicle_call(request, "read_odometer", answer)


def _units(request: Request) -> str:
    unit = request.headers.get("sc-unit-system", "metric").lower()
    return unit if unit in {"metric", "imperial"} else "metric"


def _basic(request: Request) -> tuple[str | None, str | None]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else (None, None)


def build_app(cloud: SmartcarCloud, limits: SmartcarLimits | None = None) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/oauth/token", cloud.token, methods=["POST"]),
        Route("/oauth/authorize", cloud.authorize, methods=["GET"]),
        Route("/v2.0/user", cloud.user, methods=["GET"]),
        Route("/v2.0/vehicles", cloud.vehicles, methods=["GET"]),
        Route("/v2.0/vehicles/{vehicle_id}/", cloud.attributes, methods=["GET"]),
        Route("/v2.0/vehicles/{vehicle_id}/security", cloud.security, methods=["GET", "POST"]),
        Route("/v2.0/vehicles/{vehicle_id}/battery", cloud.battery, methods=["GET"]),
        Route("/v2.0/vehicles/{vehicle_id}/location", cloud.location, methods=["GET"]),
        Route("/v2.0/vehicles/{vehicle_id}/odometer", cloud.odometer, methods=["GET"]),
    ]
    if limits is not None:  # the application's limits (twin.simlimits), answered as Smartcar does (limits.py)
        routes = limits.routes(routes)
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(InjectedError(404, "RESOURCE_NOT_FOUND", "PATH", "The requested resource does not exist."))
