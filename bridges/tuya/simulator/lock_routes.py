"""Token, device, status and remote lock/unlock endpoints of the simulated cloud."""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.routing import Route

from bridges.tuya.simulator.core import ApiError, Call, SimState, endpoint

__all__ = ["lock_routes"]


async def _token(call: Call) -> Any:
    if call.params.get("grant_type") != "1":
        raise ApiError(1003, "grant type invalid")
    return _token_result(call.state, call.state.tokens.grant())


async def _refresh(call: Call) -> Any:
    return _token_result(call.state, call.state.tokens.use_refresh(call.path["refresh_token"]))


def _token_result(state: SimState, pair: Any) -> dict[str, Any]:
    return {
        "uid": pair.uid,
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expire_time": max(1, round(state.tokens.lifetime)),
    }


async def _device(call: Call) -> Any:
    lock = call.device
    return {
        "id": lock.device_id,
        "name": lock.name,
        "uid": call.state.tokens.uid,
        "category": "jtmspro",
        "product_id": "sim-lock",
        "product_name": "Wi-Fi Smart Lock",
        "model": "SIM-L1",
        "online": lock.online,
        "sub": False,
        "time_zone": "+00:00",
        "update_time": lock.update_time // 1000,
        "status": lock.status(),
    }


async def _status(call: Call) -> Any:
    return call.device.status()


async def _ticket(call: Call) -> Any:
    ticket_id = secrets.token_hex(8)
    lifetime = call.state.config.ticket_lifetime
    call.state.tickets[ticket_id] = (call.device.device_id, time.monotonic() + lifetime)
    return {"ticket_id": ticket_id, "ticket_key": secrets.token_hex(16), "expire_time": int(lifetime)}


async def _door_operate(call: Call) -> Any:
    ticket_id = call.body.get("ticket_id")
    if not isinstance(ticket_id, str) or not ticket_id:
        raise ApiError(1100, "param is empty: ticket_id")
    ticket = call.state.tickets.pop(ticket_id, None)
    if ticket is None or ticket[0] != call.device.device_id or time.monotonic() > ticket[1]:
        raise ApiError(1109, "param is illegal: ticket_id")
    if not call.device.remote_unlock_without_pwd:
        raise ApiError(2004, "remote unlock without password is not enabled")
    raw_open = call.body.get("open")
    if isinstance(raw_open, str) and raw_open in {"true", "false"}:
        raw_open = raw_open == "true"
    if not isinstance(raw_open, bool):
        raise ApiError(1101, "param is illegal: open")
    call.device.operate(lock=not raw_open)
    return True


async def _remote_unlocks(call: Call) -> Any:
    return [
        {"remote_unlock_type": "remoteUnlockWithoutPwd", "open": call.device.remote_unlock_without_pwd},
        {"remote_unlock_type": "remoteUnlockWithPwd", "open": False},
    ]


async def _open_logs(call: Call) -> Any:
    page_no = call.param_int("page_no")
    page_size = call.param_int("page_size", high=100)
    start = call.param_int("start_time", default=0, low=0, high=2**62)
    end = call.param_int("end_time", default=2**62, low=0, high=2**62)
    logs = [log for log in reversed(call.device.open_logs) if start <= log["update_time"] <= end]
    return {"total": len(logs), "logs": logs[(page_no - 1) * page_size : page_no * page_size]}


def lock_routes(state: SimState) -> list[Route]:
    return [
        endpoint(state, "GET", "/v1.0/token", _token, token_call=True),
        endpoint(state, "GET", "/v1.0/token/{refresh_token}", _refresh, token_call=True),
        endpoint(state, "GET", "/v1.0/devices/{device_id}", _device, device=True),
        endpoint(state, "GET", "/v1.0/devices/{device_id}/status", _status, device=True),
        endpoint(state, "POST", "/v1.0/smart-lock/devices/{device_id}/password-ticket", _ticket, device=True),
        endpoint(
            state,
            "POST",
            "/v1.0/smart-lock/devices/{device_id}/password-free/door-operate",
            _door_operate,
            device=True,
            online=True,
        ),
        endpoint(state, "GET", "/v1.0/devices/{device_id}/door-lock/remote-unlocks", _remote_unlocks, device=True),
        endpoint(state, "GET", "/v1.0/devices/{device_id}/door-lock/open-logs", _open_logs, device=True),
    ]
