"""The simulated Segway cloud as a Starlette app: token endpoint, bearer checks, envelopes."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from bridges.segway.simulator.handlers import MESSAGES, ROUTES, Route, SimError
from bridges.segway.simulator.limits import API_NAMES, refusal_answer
from twin.simlimits import limit_routes

if TYPE_CHECKING:
    from bridges.segway.simulator.core import SegwaySimulator

__all__ = ["build_app"]


def _envelope(code: int, data: Any = None, *, id_field: str = "opId") -> JSONResponse:
    return JSONResponse(
        {
            "code": code,
            "msg": MESSAGES.get(code, "error"),
            "data": data,
            "t": int(time.time() * 1000),
            id_field: str(uuid.uuid4()),
        }
    )


def build_app(sim: SegwaySimulator) -> Starlette:
    async def token(request: Request) -> Response:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        sim.record(request, fields)
        if sim.token_gate is not None:
            await sim.token_gate.wait()
        await sim.before_answer()
        if (fault := sim.take_http_fault()) is not None:
            return fault
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if fields.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"},
                status_code=400,
            )
        if fields.get("client_id") != sim.client_id or fields.get("client_secret") != sim.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Bad client credentials"}, status_code=401
            )
        access_token, lifetime = sim.issue_token()
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "bearer",
                "expires_in": lifetime,
                "scope": "read write trust",
            }
        )

    async def business(request: Request) -> Response:
        route = ROUTES[request.url.path]
        body: dict[str, Any] = dict(request.query_params)
        parse_failed = False
        if request.method == "POST":
            is_json = request.headers.get("content-type", "").startswith("application/json")
            raw = await request.body()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and is_json:
                body.update(parsed)
            else:
                parse_failed = True
        sim.record(request, body)
        await sim.before_answer()
        if (fault := sim.take_http_fault()) is not None:
            return fault
        if not sim.bearer_valid(request.headers.get("authorization")):
            return _envelope(15101, id_field=route.id_field)
        if sim.restricted:
            return _envelope(15990, id_field=route.id_field)
        if parse_failed or request.method != route.method:
            return _envelope(15004, id_field=route.id_field)
        return await _answer(sim, route, body)

    routes = [StarletteRoute("/oauth/token", token, methods=["POST"])]
    routes += [StarletteRoute(path, business, methods=["GET", "POST"]) for path in ROUTES]
    # the account's limits (twin.simlimits), answered as Segway's gateway would (limits.py)
    return Starlette(routes=limit_routes(routes, sim.limits, answer=refusal_answer, names=API_NAMES))


async def _answer(sim: SegwaySimulator, route: Route, body: dict[str, Any]) -> Response:
    iot_code = body.get("iotCode")
    if isinstance(iot_code, bool) or not isinstance(iot_code, str | int) or str(iot_code) == "":
        return _envelope(15004, id_field=route.id_field)
    vehicle = sim.fleet.get(str(iot_code))
    if vehicle is None:
        return _envelope(15102, id_field=route.id_field)
    if vehicle.latency > 0:
        await anyio.sleep(vehicle.latency)
    vehicle.settle()
    injected = vehicle.take_injected()
    if injected is not None:
        return _envelope(injected, id_field=route.id_field)
    if not vehicle.activated:
        return _envelope(15300, id_field=route.id_field)
    try:
        data = route.handler(vehicle, body)
    except SimError as exc:
        return _envelope(exc.code, id_field=route.id_field)
    sim.wake()
    return _envelope(0, data, id_field=route.id_field)
