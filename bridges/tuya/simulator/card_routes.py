"""The five door-lock card operations of the simulated cloud."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from bridges.tuya.simulator.core import ApiError, Call, SimState, endpoint
from bridges.tuya.simulator.fleet import SimCard

__all__ = ["card_routes"]

_BASE = "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"
_QUERY = "/v1.0/cloud/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"


def _card(call: Call) -> SimCard:
    card = call.device.cards.get(call.path["lock_card_id"])
    if card is None:
        raise ApiError(1000, "data not exist")
    return card


def _operated(card: SimCard, call: Call) -> dict[str, Any]:
    return {
        "lock_card_id": card.lock_card_id,
        "operate_id": f"{card.lock_card_id}-{len(call.state.calls)}",
        "operate_result": True,
    }


async def _issue(call: Call) -> Any:
    card_id = call.body.get("card_id")
    if not isinstance(card_id, str) or not card_id:
        raise ApiError(1100, "param is empty: card_id")
    return _operated(call.device.issue_card(card_id), call)


async def _modify(call: Call) -> Any:
    card = _card(call)
    begin = call.body.get("begin_time", card.begin_time)
    end = call.body.get("end_time", card.end_time)
    if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end <= begin:
        raise ApiError(1101, "param is illegal: begin_time/end_time")
    card.begin_time, card.end_time = begin, end
    return _operated(card, call)


async def _freeze(call: Call) -> Any:
    card = _card(call)
    status = call.body.get("freeze_status")
    if status not in (0, 1):
        raise ApiError(1101, "param is illegal: freeze_status")
    card.frozen = status == 1
    return _operated(card, call)


async def _delete(call: Call) -> Any:
    card = _card(call)
    del call.device.cards[card.lock_card_id]
    return _operated(card, call)


async def _query(call: Call) -> Any:
    card = _card(call)
    return {"lock_card_id": card.lock_card_id, "begin_time": card.begin_time, "end_time": card.end_time}


def card_routes(state: SimState) -> list[Route]:
    one = _BASE + "/{lock_card_id}"
    flags: dict[str, Any] = {"device": True, "cards": True}
    return [
        endpoint(state, "POST", _BASE, _issue, online=True, **flags),
        endpoint(state, "PUT", one, _modify, online=True, **flags),
        endpoint(state, "PUT", one + "/freeze-status", _freeze, online=True, **flags),
        endpoint(state, "DELETE", one, _delete, online=True, **flags),
        endpoint(state, "GET", _QUERY + "/{lock_card_id}", _query, **flags),
    ]
