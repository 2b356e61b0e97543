"""Every user and card endpoint as an action: argument validation and calls against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridges.tuya.actions import ENDPOINTS
from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.simulator import TuyaSimulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.testing_fakes import command_context

DOCUMENTED = {
    # tuya-smart-lock-user-api.txt
    ("GET", "/v1.0/smart-lock/devices/{device_id}/users"),
    ("PUT", "/v1.0/smart-lock/devices/{device_id}/users/{user_id}/schedule"),
    ("GET", "/v1.0/smart-lock/devices/{device_id}/opmodes/{user_id}"),
    ("GET", "/v1.0/devices/{device_id}/door-lock/absent-users"),
    ("POST", "/v1.0/smart-lock/devices/{device_id}/users/{user_ids}/actions/delete-users-issue"),
    ("POST", "/v1.0/devices/{device_id}/user"),
    ("PUT", "/v1.0/devices/{device_id}/users/{user_id}"),
    ("PUT", "/v1.0/smart-lock/devices/{device_id}/users/{user_id}/actions/role"),
    ("DELETE", "/v1.0/devices/{device_id}/users/{user_id}"),
    ("GET", "/v1.0/devices/{device_id}/users/{user_id}"),
    ("GET", "/v1.1/devices/{device_id}/users/{user_id}"),
    ("GET", "/v1.0/devices/{device_id}/users"),
    ("GET", "/v1.1/devices/{device_id}/users"),
    ("POST", "/v1.0/devices/{device_id}/device-lock/users/{user_id}/allocate"),
    ("POST", "/v1.0/devices/{device_id}/door-lock/opmodes/actions/allocate"),
    ("POST", "/v1.0/smart-lock/devices/{device_id}/opmodes/actions/cancel-allocate"),
    ("GET", "/v1.0/smart-lock/users/{uid}/devices"),
    # tuya-doorlock-card-api.txt
    ("POST", "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"),
    ("DELETE", "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards/{lock_card_id}"),
    (
        "PUT",
        "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards/{lock_card_id}/freeze-status",
    ),
    ("PUT", "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards/{lock_card_id}"),
    ("GET", "/v1.0/cloud/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards/{lock_card_id}"),
}


def test_actions_cover_every_documented_endpoint() -> None:
    assert DOCUMENTED - {(e.method, e.path) for e in ENDPOINTS} == set()


def test_actions_names_unique_and_gets_idempotent() -> None:
    names = [e.name for e in ENDPOINTS]
    assert len(names) == len(set(names))
    assert {e.name for e in ENDPOINTS if e.idempotent} == {e.name for e in ENDPOINTS if e.method == "GET"}


async def run(adapter: TuyaAdapter, device: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    spec = adapter.actions()[action]
    result = await spec.handler(device, spec.arguments.model_validate(payload), command_context(device, action))
    assert result.data is not None
    return result.data


def user_by_name(sim: TuyaSimulator, device: str, name: str) -> str:
    return next(u.user_id for u in sim.fleet[device].users.values() if u.nick_name == name)


@pytest.mark.anyio
async def test_user_lifecycle_through_actions(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    added = await run(adapter, device, "add_user", {"nick_name": "Ann", "sex": 2, "contact": "ann@example.com"})
    user_id = added["user_id"]
    assert sim.fleet[device].users[user_id].contact == "ann@example.com"
    await run(adapter, device, "update_user", {"user_id": user_id, "nick_name": "Anna", "sex": 2, "height": 170})
    assert (await run(adapter, device, "get_user_v1", {"user_id": user_id}))["nick_name"] == "Anna"
    assert (await run(adapter, device, "get_user", {"user_id": user_id}))["user_type"] == 20
    await run(adapter, device, "set_user_role", {"user_id": user_id, "role": "admin"})
    assert sim.fleet[device].users[user_id].user_type == 10
    schedule = {
        "user_id": user_id,
        "permanent": False,
        "effective_time": 1628179200,
        "expired_time": 1640015999,
        "schedule_details": [{"start_minute": 420, "end_minute": 1438, "working_day": 99}],
    }
    assert (await run(adapter, device, "set_user_schedule", schedule)) == {"result": True}
    stored = sim.fleet[device].users[user_id].schedule
    assert stored["schedule_details"][0]["start_minute"] == 420
    assert stored["expired_time"] == 1640015999
    await run(adapter, device, "delete_user", {"user_id": user_id})
    assert user_id not in sim.fleet[device].users


@pytest.mark.anyio
async def test_list_users_paging_and_filters(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    for n in range(5):
        await run(adapter, device, "add_user", {"nick_name": f"tenant {n}", "sex": 0})
    page = await run(adapter, device, "list_users", {"keyword": "tenant", "page_no": 1, "page_size": 2})
    assert (page["total"], page["total_pages"], page["has_more"], len(page["records"])) == (5, 3, True, 2)
    last = await run(adapter, device, "list_users", {"keyword": "tenant", "page_no": 3, "page_size": 2})
    assert (last["has_more"], len(last["records"])) == (False, 1)
    admins = await run(adapter, device, "list_users", {"role": "admin"})
    assert [r["nick_name"] for r in admins["records"]] == ["Admin"]
    everyone = await run(adapter, device, "list_users_v1", {})
    assert len(everyone["result"]) == 8
    call = next(c for c in sim.calls if c.path.startswith("/v1.1/devices/"))
    assert call.params == {"keyword": "tenant", "role": "", "page_no": "1", "page_size": "2"}


@pytest.mark.anyio
async def test_unlock_methods_allocate_and_cancel(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    guest = user_by_name(sim, device, "Guest")
    unlock = [{"dp_code": "unlock_card", "unlock_sn": 1}, {"dp_code": "unlock_password", "unlock_sn": 2}]
    await run(adapter, device, "allocate_unlock_method", {"user_id": guest, "unlock_list": unlock})
    await run(adapter, device, "allocate_unlock_method_by_number", {"user_id": guest, "no": "1", "type": "fingerprint"})
    methods = await run(adapter, device, "list_unlock_methods", {"user_id": guest})
    assert sorted((m["dp_code"], m["unlock_sn"]) for m in methods["result"]) == [
        ("unlock_card", 1),
        ("unlock_fingerprint", 1),
        ("unlock_password", 2),
    ]
    cards_only = await run(adapter, device, "list_unlock_methods", {"user_id": guest, "codes": ["unlock_card"]})
    assert [m["dp_code"] for m in cards_only["result"]] == ["unlock_card"]
    lock_users = await run(adapter, device, "list_lock_users", {"codes": ["unlock_card"], "page_size": 10})
    detail = next(r for r in lock_users["records"] if r["user_id"] == guest)["unlock_detail"]
    assert detail[0]["count"] == 1
    await run(adapter, device, "cancel_unlock_allocation", {"user_id": guest, "unlock_list": unlock})
    left = await run(adapter, device, "list_unlock_methods", {"user_id": guest})
    assert [m["dp_code"] for m in left["result"]] == ["unlock_fingerprint"]


@pytest.mark.anyio
async def test_absent_users_delete_issue_and_user_devices(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    guest = user_by_name(sim, device, "Guest")
    absent = await run(adapter, device, "list_absent_users", {})
    assert [u["user_id"] for u in absent["result"]] == [guest]
    await run(adapter, device, "delete_users_issue", {"user_ids": [guest]})
    assert guest not in sim.fleet[device].users
    assert any(c.path.endswith(f"/users/{guest}/actions/delete-users-issue") for c in sim.calls)
    owner_uid = next(u.uid for u in sim.fleet[device].users.values() if u.user_type == 50)
    devices = await run(adapter, device, "list_user_devices", {"uid": owner_uid, "page_size": 10})
    assert [d["id"] for d in devices["records"]] == [device]


@pytest.mark.anyio
async def test_card_actions_every_operation(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    issued = await run(adapter, device, "issue_card", {"card_id": "CARD-7777"})
    assert issued["operate_result"] is True
    lock_card_id = issued["lock_card_id"]
    window = {"begin": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"}
    await run(adapter, device, "modify_card", {"lock_card_id": lock_card_id, **window})
    card = await run(adapter, device, "get_card", {"lock_card_id": lock_card_id})
    assert (card["begin_time"], card["end_time"]) == (1767225600000, 1780272000000)
    await run(adapter, device, "freeze_card", {"lock_card_id": lock_card_id, "frozen": True})
    assert sim.fleet[device].cards[lock_card_id].frozen
    await run(adapter, device, "delete_card", {"lock_card_id": lock_card_id})
    with pytest.raises(VendorError) as caught:
        await run(adapter, device, "get_card", {"lock_card_id": lock_card_id})
    assert caught.value.info.vendor_code == "1000"


@pytest.mark.anyio
async def test_lock_actions_remote_unlocks_and_open_logs(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    remote = await run(adapter, device, "list_remote_unlocks", {})
    assert {"remote_unlock_type": "remoteUnlockWithoutPwd", "open": True} in remote["result"]
    sim.fleet[device].bolt_seconds = 0
    await adapter.lock(device, locked=False, ctx=command_context(device))
    logs = await run(adapter, device, "list_open_logs", {"page_size": 5})
    assert logs["total"] == 1


@pytest.mark.anyio
async def test_action_offline_device_is_device_offline(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].force_offline()
    guest = user_by_name(sim, device, "Guest")
    with pytest.raises(VendorError) as caught:
        await run(adapter, device, "delete_users_issue", {"user_ids": [guest]})
    assert caught.value.info.code == ErrorCode.DEVICE_OFFLINE


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        (
            "set_user_schedule",
            {
                "user_id": "1",
                "permanent": True,
                "schedule_details": [{"start_minute": 0, "end_minute": 1441, "working_day": 1}],
            },
        ),
        (
            "set_user_schedule",
            {
                "user_id": "1",
                "permanent": True,
                "schedule_details": [{"start_minute": -1, "end_minute": 10, "working_day": 1}],
            },
        ),
        (
            "set_user_schedule",
            {
                "user_id": "1",
                "permanent": True,
                "schedule_details": [{"start_minute": 0, "end_minute": 10, "working_day": 128}],
            },
        ),
        ("set_user_schedule", {"user_id": "1", "permanent": False}),
        ("set_user_schedule", {"user_id": "1", "permanent": False, "effective_time": 20, "expired_time": 10}),
        ("set_user_role", {"user_id": "1", "role": "owner"}),
        ("set_user_role", {"user_id": "1"}),
        ("list_users", {"role": "superuser"}),
        ("list_users", {"page_no": 0}),
        ("list_users", {"page_size": 101}),
        ("list_users", {"unknown": 1}),
        ("list_lock_users", {"codes": []}),
        ("list_lock_users", {"codes": ["unlock_teleport"]}),
        ("add_user", {"nick_name": "", "sex": 1}),
        ("add_user", {"nick_name": "x", "sex": 3}),
        ("get_user", {"user_id": "../../v1.0/token"}),
        ("delete_users_issue", {"user_ids": []}),
        ("allocate_unlock_method", {"user_id": "1", "unlock_list": []}),
        ("allocate_unlock_method_by_number", {"user_id": "1", "no": "1", "type": "iris"}),
        ("issue_card", {"card_id": "ab"}),
        ("modify_card", {"lock_card_id": "1", "begin": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
        ("freeze_card", {"lock_card_id": "1"}),
    ],
)
def test_action_arguments_rejected_before_any_call(adapter_actions: Any, action: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        adapter_actions[action].arguments.model_validate(payload)


@pytest.fixture
def adapter_actions() -> Any:
    from bridges.tuya.settings import TuyaSettings

    settings = TuyaSettings(client_id="c", client_secret="s", project_id="p", devices=["d"])
    return TuyaAdapter(settings=settings).actions()
