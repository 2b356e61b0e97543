"""How the simulated OKAI cloud answers a call over its limits (:mod:`twin.simlimits`).

OKAI's document (okai-paas-api.md) has no code for a rate limit, a busy platform or a
spent quota, so these answers are assumptions, kept to what any HTTP gateway answers: HTTP 429
``Too Many Requests``, with ``Retry-After`` (whole seconds) when the wait is known (a token bucket
refilling, a quota's reset), none for calls over the cap in flight. The client maps 429 to
``RATE_LIMITED`` (bridges/okai/client.py).
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from twin.simlimits import Refusal

__all__ = ["API_NAMES", "refusal_answer"]

#: the APIs a profile's ``rates`` may name, by the simulator's own spelling of their paths (app.py)
API_NAMES = {
    "/scooter/control/switchLock": "switchLock",
    "/scooter/query/status": "status",
    "/scooter/query/location": "location",
}


def refusal_answer(refusal: Refusal, request: Request) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(refusal.retry_after)))} if refusal.retry_after > 0 else {}
    return PlainTextResponse("Too Many Requests", status_code=429, headers=headers)
