"""How the simulated Smartcar cloud answers a call over its limits (:mod:`twin.simlimits`).

- Over the application's cap in flight or its rate: HTTP 429, type ``RATE_LIMIT``, code
  ``SMARTCAR_API`` ("You have reached the throttling rate limit for your application."), resolution
  ``RETRY_LATER``, in Smartcar's v2 error body. Type, code and status are Smartcar's documented ones
  (vendor-notes: 429 RATE_LIMIT with codes VEHICLE and SMARTCAR_API); the ``Retry-After`` header
  on this code (seconds, when the wait is known: a bucket refilling) is an assumption, as its
  documents promise it for the per-vehicle limit (``RATE_LIMIT:VEHICLE``, already simulated by
  ``vehicle_rate_limit``);
- a vehicle's calls of the month spent (``vehicle_quota``): HTTP 430, type ``BILLING``, code
  ``VEHICLE_REQUEST_LIMIT``, as Smartcar's API-limits page describes it ("a maximum number of API
  calls ... to each single vehicle in a given month"); the page gives no ``Retry-After``, so none
  is sent. The account-wide ``quota`` of a profile is answered the same way, naming no vehicle.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from twin.simlimits import Answer, Endpoint, LimitProfile, Refusal, VendorLimits, limited

from .fleet import InjectedError

__all__ = ["SmartcarLimits"]

APP_LIMIT = "You have reached the throttling rate limit for your application."
VEHICLE_LIMIT = "The vehicle has exceeded the number of requests allowed by your plan this month."


class SmartcarLimits:
    """The application's limits, and a quota per vehicle (Smartcar plans count calls per vehicle)."""

    def __init__(self, profile: LimitProfile | None = None, *, vehicle_quota: LimitProfile | None = None) -> None:
        self.account = VendorLimits(profile)
        self.vehicle_quota = vehicle_quota
        self.vehicles: dict[str, VendorLimits] = {}

    def configure(self, profile: LimitProfile, *, vehicle_quota: LimitProfile | None = None) -> None:
        self.account.configure(profile)
        self.vehicle_quota = vehicle_quota
        self.vehicles.clear()

    def routes(self, routes: list[BaseRoute]) -> list[BaseRoute]:
        """The vehicle routes behind the limits (OAuth's are not limited)."""
        from .app import error_response

        def answer(refusal: Refusal, request: Request) -> Response:
            if refusal.kind == "quota":
                spec = InjectedError(430, "BILLING", "VEHICLE_REQUEST_LIMIT", VEHICLE_LIMIT, None)
            else:
                wait = math.ceil(refusal.retry_after) if refusal.retry_after > 0 else None
                spec = InjectedError(429, "RATE_LIMIT", "SMARTCAR_API", APP_LIMIT, "RETRY_LATER", wait)
            return error_response(spec)

        out: list[BaseRoute] = []
        for route in routes:
            if isinstance(route, Route) and route.path.startswith("/v2.0/vehicles/"):
                endpoint = self._per_vehicle(route.endpoint, answer)
                wrapped = limited(endpoint, self.account, api=route.path, answer=answer)
                out.append(Route(route.path, wrapped, methods=sorted(route.methods or ()), name=route.name))
            else:
                out.append(route)
        return out

    def _per_vehicle(self, endpoint: Endpoint, answer: Answer) -> Endpoint:
        async def run(request: Request) -> Response:
            if self.vehicle_quota is None:
                return await endpoint(request)
            vehicle_id = str(request.path_params.get("vehicle_id", ""))
            limits = self.vehicles.get(vehicle_id)
            if limits is None:
                limits = self.vehicles[vehicle_id] = VendorLimits(self.vehicle_quota)
            return await limited(endpoint, limits, api=route_api(request), answer=answer)(request)

        return run


def route_api(request: Request) -> str:
    return request.url.path.rsplit("/", 1)[-1] or "attributes"
