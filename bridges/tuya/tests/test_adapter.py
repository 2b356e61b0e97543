"""The adapter against the simulator over real HTTP: status mapping, lock/unlock, cards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.simulator import TuyaSimulator, serve_simulator
from contracts.errors import ErrorCode
from contracts.messages import EventType, LockState
from twin.adapter import PlannedOperation, VendorError
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink, command_context

from .conftest import tuya_settings


async def reconcile_cards(adapter: TuyaAdapter, device: str, value: dict[str, object]) -> list[PlannedOperation]:
    """What the engine does with a cards /set: ask for the plan, run each operation."""
    plan = adapter.desired_fields()["cards"].plan
    assert plan is not None
    ops = list(await plan(device, value, command_context(device, "cards")))
    for op in ops:
        await op.run(command_context(device, "cards"))
    return ops


T0 = datetime.now(UTC).replace(microsecond=0)


def window(days: int, *, frozen: bool = False) -> dict[str, object]:
    return {"begin": T0.isoformat(), "end": (T0 + timedelta(days=days)).isoformat(), "frozen": frozen}


async def wait_lock(adapter: TuyaAdapter, device_id: str, state: LockState) -> dict[str, object]:
    """Poll the status (the simulator has no push) until the lock reports ``state``."""
    for _ in range(250):
        values = (await adapter.read_status(device_id)).values
        if values["lock"] == state:
            return values
        await anyio.sleep(0.02)
    raise AssertionError(f"{device_id} never reported {state}")


@pytest.mark.anyio
async def test_list_devices_from_settings(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    devices = await adapter.list_devices()
    assert [d.id for d in devices] == sim.device_ids
    assert devices[0].capabilities == {"lock", "users", "cards"}
    assert devices[0].poll_interval == 30.0


@pytest.mark.anyio
async def test_read_status_maps_data_points(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].door_opened = True
    patch = await adapter.read_status(device)
    assert patch.values == {
        "lock": LockState.LOCKED,
        "online": True,
        "last_alarm": None,
        "battery": 87.0,
        "door_open": True,
        "cards": {},
    }
    assert patch.observed_at is not None


@pytest.mark.anyio
async def test_read_status_offline_device_reported_offline(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    sim.fleet[sim.device_ids[0]].force_offline()
    assert (await adapter.read_status(sim.device_ids[0])).values["online"] is False


@pytest.mark.anyio
async def test_read_status_inverted_polarity(sim: TuyaSimulator, served: ServedApp, tmp_path: Path) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].inverted_polarity = True
    adapter = TuyaAdapter(settings=tuya_settings(sim, served, lock_polarity={device: "true_is_unlocked"}))
    await adapter.start(RecordingSink(data_dir=tmp_path))
    try:
        assert (await adapter.read_status(device)).values["lock"] == LockState.LOCKED
        # the other lock keeps the default polarity
        assert (await adapter.read_status(sim.device_ids[1])).values["lock"] == LockState.LOCKED
    finally:
        await adapter.stop()


@pytest.mark.anyio
async def test_read_status_jam_alarm_is_jammed(sim: TuyaSimulator, adapter: TuyaAdapter, sink: RecordingSink) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].jammed = True
    await adapter.lock(device, locked=False, ctx=command_context(device))
    values = await wait_lock(adapter, device, LockState.JAMMED)
    assert values["last_alarm"] == "tongue_bad"
    await adapter.read_status(device)
    alerts = [data for _, kind, data in sink.events if kind == EventType.ALERT]
    assert alerts == [{"alarm": "tongue_bad"}]  # announced once


@pytest.mark.anyio
async def test_lock_unlock_by_ticket_then_confirmed_by_status(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    result = await adapter.lock(device, locked=False, ctx=command_context(device))
    assert result.data == {"accepted": True}
    operate = [c for c in sim.calls if c.path.endswith("door-operate")]
    assert operate[-1].body["open"] is True
    ticket = [c for c in sim.calls if c.path.endswith("password-ticket")]
    assert operate[-1].body["ticket_id"]
    assert len(ticket) == 1
    await wait_lock(adapter, device, LockState.UNLOCKED)
    await adapter.lock(device, locked=True, ctx=command_context(device))
    assert [c for c in sim.calls if c.path.endswith("door-operate")][-1].body["open"] is False
    await wait_lock(adapter, device, LockState.LOCKED)


@pytest.mark.anyio
async def test_lock_offline_is_device_offline(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].force_offline()
    with pytest.raises(VendorError) as caught:
        await adapter.lock(device, locked=False, ctx=command_context(device))
    assert caught.value.info.code == ErrorCode.DEVICE_OFFLINE
    assert caught.value.info.retryable


@pytest.mark.anyio
async def test_lock_permission_denied(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].inject(1106, path_contains="door-operate")
    with pytest.raises(VendorError) as caught:
        await adapter.lock(device, locked=False, ctx=command_context(device))
    assert caught.value.info.code == ErrorCode.PERMISSION_DENIED


@pytest.mark.anyio
async def test_lock_stuck_accepts_and_never_moves(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].stuck = True
    assert (await adapter.lock(device, locked=False, ctx=command_context(device))).data == {"accepted": True}
    assert not sim.fleet[device].moving  # nothing under way that could ever move the bolt
    assert (await adapter.read_status(device)).values["lock"] == LockState.LOCKED


@pytest.mark.anyio
async def test_set_desired_cards_full_reconciliation(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    foreign = lock.issue_card("FOREIGN-0007")

    async def set_cards(cards: dict[str, object]) -> dict[str, object]:
        value = {cid: spec for cid, spec in cards.items()}
        await reconcile_cards(adapter, device, value)
        reported = (await adapter.read_status(device)).values["cards"]
        assert adapter.desired_fields()["cards"].confirmed(value, {"cards": reported})
        return reported  # type: ignore[no-any-return]

    reported = await set_cards({"CARD-1111": window(30), "CARD-2222": window(10, frozen=True)})
    assert set(reported) == {"****1111", "****2222"}
    assert reported["****2222"]["frozen"] is True
    on_lock = {c.card_id: c for c in lock.cards.values()}
    assert on_lock["CARD-2222"].frozen and not on_lock["CARD-1111"].frozen
    assert on_lock["CARD-1111"].end_time == int((T0 + timedelta(days=30)).timestamp() * 1000)

    await set_cards({"CARD-1111": window(60), "CARD-2222": window(10, frozen=True)})
    assert {c.card_id: c for c in lock.cards.values()}["CARD-1111"].end_time == int(
        (T0 + timedelta(days=60)).timestamp() * 1000
    )
    await set_cards({"CARD-1111": window(60, frozen=True), "CARD-2222": window(10)})
    await set_cards({"CARD-2222": window(10)})
    assert {c.card_id for c in lock.cards.values()} == {"CARD-2222", "FOREIGN-0007"}
    await set_cards({})
    assert list(lock.cards.values()) == [foreign]  # a card issued elsewhere is left alone
    status = await adapter.read_status(device)
    assert status.values["cards"] == {}


@pytest.mark.anyio
async def test_set_desired_cards_idempotent_second_run_calls_nothing(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    await reconcile_cards(adapter, device, {"CARD-1111": window(30)})
    before = len(sim.calls)
    assert await reconcile_cards(adapter, device, {"CARD-1111": window(30)}) == []
    assert all(c.method == "GET" for c in sim.calls[before:])


@pytest.mark.anyio
async def test_set_desired_cards_managed_ids_survive_restart(
    sim: TuyaSimulator, served: ServedApp, tmp_path: Path
) -> None:
    device = sim.device_ids[0]
    first = TuyaAdapter(settings=tuya_settings(sim, served))
    await first.start(RecordingSink(data_dir=tmp_path))
    await reconcile_cards(first, device, {"CARD-1111": window(30)})
    await first.stop()
    second = TuyaAdapter(settings=tuya_settings(sim, served))
    await second.start(RecordingSink(data_dir=tmp_path))
    try:
        assert set((await second.read_status(device)).values["cards"]) == {"****1111"}
        await reconcile_cards(second, device, {})
    finally:
        await second.stop()
    assert sim.fleet[device].cards == {}
    assert "CARD-1111" not in (tmp_path / "cards.json").read_text()


@pytest.mark.anyio
async def test_set_desired_cards_offline_is_retryable(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    sim.fleet[device].force_offline()
    with pytest.raises(VendorError) as caught:
        await reconcile_cards(adapter, device, {"CARD-1111": window(30)})
    assert caught.value.info.code == ErrorCode.DEVICE_OFFLINE
    assert caught.value.info.retryable


@pytest.mark.anyio
async def test_set_desired_cards_project_not_authorized(tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, card_api_authorized=False)
    async with serve_simulator(sim) as served:
        adapter = TuyaAdapter(settings=tuya_settings(sim, served))
        await adapter.start(RecordingSink(data_dir=tmp_path))
        try:
            device = sim.device_ids[0]
            with pytest.raises(VendorError) as caught:
                await reconcile_cards(adapter, device, {"CARD-1111": window(30)})
        finally:
            await adapter.stop()
    assert caught.value.info.code == ErrorCode.PERMISSION_DENIED
    assert caught.value.info.vendor_code == "28841105"


@pytest.mark.anyio
async def test_set_desired_cards_without_project_unsupported(
    sim: TuyaSimulator, served: ServedApp, tmp_path: Path
) -> None:
    adapter = TuyaAdapter(settings=tuya_settings(sim, served, project_id=None))
    await adapter.start(RecordingSink(data_dir=tmp_path))
    try:
        assert "cards" not in adapter.desired_fields()
        assert "get_card" not in adapter.actions()
        assert (await adapter.list_devices())[0].capabilities == {"lock", "users"}
        with pytest.raises(VendorError) as caught:
            await adapter.set_desired(sim.device_ids[0], "cards", {}, command_context(sim.device_ids[0], "cards"))
        assert caught.value.info.code == ErrorCode.UNSUPPORTED
    finally:
        await adapter.stop()


@pytest.mark.anyio
async def test_logs_never_show_card_ids_or_secrets(
    sim: TuyaSimulator, adapter: TuyaAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    device = sim.device_ids[0]
    await reconcile_cards(adapter, device, {"CARD-SECRET-9876": window(30)})
    sim.tokens.expire_all()
    await adapter.read_status(device)
    text = caplog.text
    assert "****9876" in text
    assert "CARD-SECRET" not in text
    assert "sim-client-secret" not in text
    assert all(token not in text for token in sim.tokens.access)
    assert all(token not in text for token in sim.tokens.refresh)
    used = [c.path.rsplit("/", 1)[1] for c in sim.calls if c.path.startswith("/v1.0/token/")]
    assert used  # the expired token was refreshed with a refresh token in the path
    assert all(token not in text for token in used)
    assert "/v1.0/token/***" in text


@pytest.mark.anyio
async def test_cards_plan_has_one_masked_operation_per_vendor_call(sim: TuyaSimulator, adapter: TuyaAdapter) -> None:
    device = sim.device_ids[0]
    ops = await reconcile_cards(adapter, device, {"CARD-1111": window(30, frozen=True)})
    assert [(op.name, op.label) for op in ops] == [
        ("issue", "****1111"),
        ("modify", "****1111"),
        ("freeze", "****1111"),
    ]
    sim.fleet[device].inject(2001, path_contains="/v1.0/osaas/")  # the operation, not the query
    plan = adapter.desired_fields()["cards"].plan
    assert plan is not None
    [delete] = await plan(device, {}, command_context(device, "cards"))
    assert (delete.name, delete.label) == ("delete", "****1111")
    with pytest.raises(VendorError) as caught:
        await delete.run(command_context(device, "cards"))
    assert caught.value.info.code == ErrorCode.DEVICE_OFFLINE


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([{"code": "lock_motor_state", "value": False}], {"lock": LockState.UNLOCKED}),
        ([], {"lock": LockState.UNKNOWN}),
        ([{"code": "lock_motor_state", "value": "yes"}], {"lock": LockState.UNKNOWN}),
        ([{"code": "battery_state", "value": "low"}], {"battery": 20.0}),
        ([{"code": "residual_electricity", "value": 140}], {}),
        ([{"code": "closed_opened", "value": "open"}], {"door_open": True}),
        ([{"code": "alarm_lock", "value": "wrong_finger"}], {"last_alarm": "wrong_finger"}),
    ],
)
def test_map_status_data_point_variants(points: list[dict[str, object]], expected: dict[str, object]) -> None:
    from bridges.tuya.models import DeviceDetail
    from bridges.tuya.settings import TuyaSettings

    adapter = TuyaAdapter(settings=TuyaSettings(client_id="c", client_secret="s", devices=["d"]))
    values = adapter.map_status("d", DeviceDetail.model_validate({"id": "d", "online": True, "status": points}))
    assert values.items() >= expected.items()
    if "battery" not in expected:
        assert "battery" not in values
