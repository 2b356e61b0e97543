"""Every endpoint of the smart-lock user document, on the simulated cloud."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from bridges.tuya.simulator.core import ApiError, Call, SimState, endpoint
from bridges.tuya.simulator.fleet import SimLock, SimOpmode, SimUser

__all__ = ["user_routes"]

_TYPE_BY_ROLE = {"admin": 10, "normal": 20}
_TYPE_BY_UNLOCK = {"fingerprint": "unlock_fingerprint", "password": "unlock_password", "card": "unlock_card"}


def _user(call: Call, user_id: str | None = None) -> SimUser:
    user_id = user_id if user_id is not None else call.path["user_id"]
    if user_id == "0":
        owner = next((u for u in call.device.users.values() if u.user_type == 50), None)
        if owner is not None:
            return owner
    user = call.device.users.get(user_id)
    if user is None:
        raise ApiError(2006, "user does not exist")
    return user


def _page(call: Call, records: list[Any]) -> dict[str, Any]:
    page_no = call.param_int("page_no")
    page_size = call.param_int("page_size", high=100)
    total = len(records)
    pages = (total + page_size - 1) // page_size
    return {
        "has_more": page_no < pages,
        "records": records[(page_no - 1) * page_size : page_no * page_size],
        "total": total,
        "total_pages": pages,
    }


def _v10(lock: SimLock, user: SimUser) -> dict[str, Any]:
    return {
        "device_id": lock.device_id,
        "user_id": user.user_id,
        "nick_name": user.nick_name,
        "sex": user.sex,
        "birthday": user.birthday,
        "height": user.height,
        "weight": user.weight,
        "contact": user.contact,
    }


def _v11(lock: SimLock, user: SimUser) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "avatar_url": "",
        "user_contact": user.contact,
        "user_type": user.user_type,
        "nick_name": user.nick_name,
        "lock_user_id": user.lock_user_id,
        "back_home_notify_attr": 0,
        "effective_flag": 1,
        "time_schedule_info": user.schedule,
        "uid": user.uid,
    }


def _opmode(lock: SimLock, op: SimOpmode) -> dict[str, Any]:
    user = lock.users.get(op.user_id or "")
    return {
        "phase": op.phase,
        "dp_code": op.dp_code,
        "unlock_attr": op.unlock_attr,
        "unlock_name": op.unlock_name,
        "user_name": user.nick_name if user else "",
        "user_id": op.user_id or "",
        "unlock_sn": op.unlock_sn,
        "unlock_id": f"{op.opmode_id}-{op.unlock_sn}",
        "lock_user_id": user.lock_user_id if user else 0,
        "opmode_id": op.opmode_id,
        "user_type": user.user_type if user else 0,
        "delivery_status": "SUCCESS",
        "allocate_flag": 0 if op.user_id else 1,
        "notify_info": {"app_send": 1},
    }


async def _lock_users(call: Call) -> Any:
    codes = {c for c in call.params.get("codes", "").split(",") if c}
    if not codes:
        raise ApiError(1100, "param is empty: codes")
    lock = call.device
    records = []
    for user in lock.users.values():
        detail = []
        for code in sorted(codes):
            ops = [op for op in lock.opmodes if op.dp_code == code and op.user_id == user.user_id]
            unlock_list = [
                {
                    "unlock_id": f"{op.opmode_id}-{op.unlock_sn}",
                    "unlock_sn": op.unlock_sn,
                    "unlock_name": op.unlock_name,
                    "unlock_attr": op.unlock_attr,
                    "op_mode_id": int(op.opmode_id),
                    "admin": user.user_type == 10,
                }
                for op in ops
            ]
            detail.append({"dp_code": code, "count": len(ops), "unlock_list": unlock_list})
        records.append({**_v11(lock, user), "unlock_detail": detail})
    return _page(call, records)


def _schedule_value(body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("schedule", body)
    if not isinstance(raw, dict):
        raise ApiError(1101, "param is illegal: schedule")
    permanent = raw.get("permanent")
    if not isinstance(permanent, bool):
        raise ApiError(1100, "param is empty: permanent")
    details = raw.get("schedule_details", raw.get("scheduleDetails", []))
    normalized = []
    for item in details if isinstance(details, list) else []:
        try:
            start = int(item.get("start_minute", item.get("startMinute")))
            end = int(item.get("end_minute", item.get("endMinute")))
            day = int(item.get("working_day", item.get("workingDay", 0)))
        except (TypeError, ValueError):
            raise ApiError(1101, "param is illegal: schedule_details") from None
        if not (0 <= start <= 1440 and 0 <= end <= 1440 and 0 <= day <= 127):
            raise ApiError(1101, "param is illegal: schedule_details")
        normalized.append(
            {
                "start_minute": start,
                "end_minute": end,
                "working_day": day,
                "all_day": bool(item.get("all_day", item.get("allDay", False))),
                "time_zone_id": item.get("time_zone_id", item.get("timeZoneId", "")),
            }
        )
    return {
        "permanent": permanent,
        "effective_time": raw.get("effective_time", raw.get("effectiveTime")),
        "expired_time": raw.get("expired_time", raw.get("expiredTime")),
        "operate": "MODIFY",
        "delivery_status": "SUCCESS",
        "schedule_details": normalized,
    }


async def _schedule(call: Call) -> Any:
    _user(call).schedule = _schedule_value(call.body)
    return True


async def _opmodes(call: Call) -> Any:
    user = _user(call)
    codes = {c for c in call.params.get("codes", "").split(",") if c}
    name = call.params.get("unlock_name", "")
    ops = [
        op
        for op in call.device.opmodes
        if op.user_id == user.user_id and (not codes or op.dp_code in codes) and name in op.unlock_name
    ]
    page_no = call.param_int("page_no")
    page_size = call.param_int("page_size", high=100)
    return [_opmode(call.device, op) for op in ops[(page_no - 1) * page_size : page_no * page_size]]


async def _absent(call: Call) -> Any:
    return [
        {"user_id": u.user_id, "user_type": u.user_type, "lock_user_id": u.lock_user_id}
        for u in call.device.users.values()
        if u.absent
    ]


async def _delete_issue(call: Call) -> Any:
    ids = [i for i in call.path["user_ids"].split(",") if i]
    for user_id in ids:
        _user(call, user_id)
    for user_id in ids:
        _remove(call.device, user_id)
    return True


def _remove(lock: SimLock, user_id: str) -> None:
    lock.users.pop(user_id, None)
    for op in lock.opmodes:
        if op.user_id == user_id:
            op.user_id = None


def _profile(call: Call) -> dict[str, Any]:
    nick_name = call.body.get("nick_name")
    if not isinstance(nick_name, str) or not nick_name:
        raise ApiError(1100, "param is empty: nick_name")
    if call.body.get("sex") not in (0, 1, 2):
        raise ApiError(1101, "param is illegal: sex")
    fields = {k: call.body.get(k) for k in ("birthday", "height", "weight") if call.body.get(k) is not None}
    return {"nick_name": nick_name, "sex": call.body["sex"], **fields}


async def _add(call: Call) -> Any:
    profile = _profile(call)
    user = call.device.add_user(profile.pop("nick_name"), contact=call.body.get("contact") or "", **profile)
    return {"user_id": user.user_id}


async def _update(call: Call) -> Any:
    user = _user(call)
    for key, value in _profile(call).items():
        setattr(user, key, value)
    return True


async def _role(call: Call) -> Any:
    user = _user(call)
    role = call.body.get("role")
    if role not in _TYPE_BY_ROLE:
        raise ApiError(1101, "param is illegal: role")
    if user.user_type == 50:
        raise ApiError(1106, "permission deny")
    user.user_type = _TYPE_BY_ROLE[role]


async def _delete(call: Call) -> Any:
    _remove(call.device, _user(call).user_id)
    return True


async def _get_v10(call: Call) -> Any:
    user = _user(call)
    if user.user_type == 10:
        raise ApiError(1106, "permission deny")
    return _v10(call.device, user)


async def _get_v11(call: Call) -> Any:
    return _v11(call.device, _user(call))


async def _list_v10(call: Call) -> Any:
    return [_v10(call.device, u) for u in call.device.users.values()]


async def _list_v11(call: Call) -> Any:
    keyword = call.params.get("keyword", "")
    role = call.params.get("role", "")
    users = [
        _v11(call.device, u)
        for u in call.device.users.values()
        if keyword.lower() in (u.nick_name + " " + u.contact).lower() and (not role or u.role == role)
    ]
    return _page(call, users)


def _assign(call: Call, items: Any, *, user_id: str | None) -> None:
    if not isinstance(items, list) or not items:
        raise ApiError(1100, "param is empty: unlock_list")
    for item in items:
        code = item.get("dp_code", item.get("code")) if isinstance(item, dict) else None
        sn = item.get("unlock_sn") if isinstance(item, dict) else None
        op = next((o for o in call.device.opmodes if o.dp_code == code and o.unlock_sn == sn), None)
        if op is None:
            raise ApiError(1101, "param is illegal: unlock_list")
        op.user_id = user_id


async def _allocate_by_no(call: Call) -> Any:
    user = _user(call)
    kind = _TYPE_BY_UNLOCK.get(str(call.body.get("type")))
    try:
        sn = int(call.body.get("no", ""))
    except ValueError:
        raise ApiError(1101, "param is illegal: no") from None
    if kind is None:
        raise ApiError(1101, "param is illegal: type")
    _assign(call, [{"dp_code": kind, "unlock_sn": sn}], user_id=user.user_id)
    return True


async def _allocate(call: Call) -> Any:
    user = _user(call, str(call.body.get("user_id", "")))
    _assign(call, call.body.get("unlock_list"), user_id=user.user_id)
    return True


async def _cancel(call: Call) -> Any:
    _user(call, str(call.body.get("user_id", "")))
    _assign(call, call.body.get("unlock_list"), user_id=None)
    return True


async def _user_devices(call: Call) -> Any:
    uid = call.path["uid"]
    records = [
        {
            "id": lock.device_id,
            "uuid": lock.device_id,
            "uid": uid,
            "name": lock.name,
            "online": lock.online,
            "category": "jtmspro",
            "model": "SIM-L1",
            "product_name": "Wi-Fi Smart Lock",
            "sub": False,
            "local_key": lock.local_key,
        }
        for lock in call.state.fleet.locks.values()
        if any(u.uid == uid for u in lock.users.values()) or uid == call.state.tokens.uid
    ]
    return _page(call, records)


def user_routes(state: SimState) -> list[Route]:
    sl = "/v1.0/smart-lock/devices/{device_id}"
    dv = "/v1.0/devices/{device_id}"
    dev = {"device": True}
    live = {"device": True, "online": True}
    return [
        endpoint(state, "GET", sl + "/users", _lock_users, **dev),
        endpoint(state, "PUT", sl + "/users/{user_id}/schedule", _schedule, **live),
        endpoint(state, "GET", sl + "/opmodes/{user_id}", _opmodes, **dev),
        endpoint(state, "GET", dv + "/door-lock/absent-users", _absent, **dev),
        endpoint(state, "POST", sl + "/users/{user_ids}/actions/delete-users-issue", _delete_issue, **live),
        endpoint(state, "POST", dv + "/user", _add, **dev),
        endpoint(state, "PUT", dv + "/users/{user_id}", _update, **dev),
        endpoint(state, "PUT", sl + "/users/{user_id}/actions/role", _role, omit_result=True, **dev),
        endpoint(state, "DELETE", dv + "/users/{user_id}", _delete, **dev),
        endpoint(state, "GET", dv + "/users/{user_id}", _get_v10, **dev),
        endpoint(state, "GET", "/v1.1/devices/{device_id}/users/{user_id}", _get_v11, **dev),
        endpoint(state, "GET", dv + "/users", _list_v10, **dev),
        endpoint(state, "GET", "/v1.1/devices/{device_id}/users", _list_v11, **dev),
        endpoint(state, "POST", dv + "/device-lock/users/{user_id}/allocate", _allocate_by_no, **live),
        endpoint(state, "POST", dv + "/door-lock/opmodes/actions/allocate", _allocate, **live),
        endpoint(state, "POST", sl + "/opmodes/actions/cancel-allocate", _cancel, **live),
        endpoint(state, "GET", "/v1.0/smart-lock/users/{uid}/devices", _user_devices),
    ]
