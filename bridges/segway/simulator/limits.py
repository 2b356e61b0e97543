"""How the simulated Segway cloud answers a call over its limits (:mod:`twin.simlimits`).

Segway's document (segway-ebike-c80-api.txt) lists its 15xxx business codes, and none
says "too many requests" or "quota spent" (15001 is a server error, 15302 a device that did not
answer). So these answers are assumptions, kept to what an HTTP gateway answers: HTTP 429
``{"error": "too_many_requests"}`` (the shape of its token endpoint's errors), with ``Retry-After``
(whole seconds) when the wait is known (a bucket refilling, a quota's reset), none over the cap in
flight. The client maps 429 to ``RATE_LIMITED`` (bridges/segway/errors.py).
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from twin.simlimits import Refusal

__all__ = ["API_NAMES", "refusal_answer"]

#: the APIs a profile's ``rates`` may name
API_NAMES = {
    "/oauth/token": "token",
    "/api/v2/vehicle/query/current/status": "status",
    "/api/v2/vehicle/control/unlock": "unlock",
    "/api/v2/vehicle/control/lock": "lock",
}


def refusal_answer(refusal: Refusal, request: Request) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(refusal.retry_after)))} if refusal.retry_after > 0 else {}
    return JSONResponse({"error": "too_many_requests"}, status_code=429, headers=headers)
