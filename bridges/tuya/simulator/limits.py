"""How the simulated Tuya cloud answers a call over its limits (:mod:`twin.simlimits`).

Tuya answers in its envelope with HTTP 200, as for every business failure:

- calls in flight over the cap, or over an API's frequency (Tuya's frequency-control page limits
  each open API per cloud project in requests per second, e.g. device actions 4/s, property reads
  50/s): ``{"success": false, "code": 1110, "msg": "concurrent request over limit"}``. The code
  and its words are from Tuya's global error codes (platform-notes: 1110 concurrent request over
  limit, 1111 system is busy); that the same code answers a frequency overrun is an assumption;
- the project's call quota spent (a trial's resource pack, refreshed monthly):
  ``{"success": false, "code": 28841004, "msg": "No permissions. Your quota of Trial Edition is
  used up."}``, the code and words as Tuya's cloud answered them to Home Assistant and localtuya
  users (their public logs); Tuya says nothing about when it comes back, so no wait is given.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridges.tuya.simulator.fleet import now_ms
from twin.simlimits import Refusal

__all__ = ["API_NAMES", "CONCURRENT_OVER_LIMIT", "QUOTA_USED_UP", "refusal_answer"]

CONCURRENT_OVER_LIMIT = 1110
QUOTA_USED_UP = 28841004
#: the APIs a profile's ``rates`` may name (Tuya limits each API on its own)
API_NAMES = {
    "/v1.0/token": "token",
    "/v1.0/devices/{device_id}/status": "status",
    "/v1.0/smart-lock/devices/{device_id}/password-ticket": "ticket",
    "/v1.0/smart-lock/devices/{device_id}/password-free/door-operate": "door_operate",
}


def refusal_answer(refusal: Refusal, request: Request) -> Response:
    if refusal.kind == "quota":
        code, msg = QUOTA_USED_UP, "No permissions. Your quota of Trial Edition is used up."
    else:
        code, msg = CONCURRENT_OVER_LIMIT, "concurrent request over limit"
    return JSONResponse({"success": False, "code": code, "msg": msg, "t": now_ms(), "tid": secrets.token_hex(16)})
