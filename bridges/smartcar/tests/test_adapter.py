"""The adapter against the simulator over real HTTP: devices, telemetry, budget, lock, actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.simulator import SmartcarSimulator, serve_simulator
from contracts.errors import ErrorCode
from contracts.messages import LockState
from twin.adapter import VendorError
from twin.testing_fakes import RecordingSink, command_context

from .conftest import linked, make_settings, make_simulator, running_adapter

pytestmark = pytest.mark.anyio


def vehicle_calls(sim: SmartcarSimulator, vehicle_id: str) -> list[tuple[str, str]]:
    return [(c.method, c.path.rsplit("/", 1)[-1]) for c in sim.calls if c.vehicle_id == vehicle_id]


async def test_list_devices_pages_through_vehicles(sink: RecordingSink) -> None:
    sim = make_simulator(devices=5)
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url, page_size=2, poll_interval=123.0)
        await linked(settings, sim, sink)
        adapter = SmartcarAdapter(settings=settings)
        await adapter.start(sink)
        try:
            devices = await adapter.list_devices()
            again = await adapter.list_devices()
        finally:
            await adapter.stop()
    assert sorted(d.id for d in devices) == sorted(sim.fleet.ids)
    assert [d.id for d in again] == [d.id for d in devices]
    first = sim.fleet[devices[0].id]
    assert devices[0].name == f"{first.year} {first.make} {first.model}"
    assert devices[0].poll_interval == 123.0
    offsets = [c.params["offset"] for c in sim.calls if c.path == "/v2.0/vehicles"]
    assert offsets == ["0", "2", "4"] * 3  # connect counts them, then two listings
    # attributes are fetched once per vehicle, then cached in the store
    assert sum(1 for c in sim.calls if c.path.endswith("/")) == 5


async def test_read_status_full_telemetry(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle = sim.fleet[sim.fleet.ids[0]]
    vehicle.open("doors", "frontLeft")
    vehicle.data_lag = 30.0
    patch = await adapter.read_status(vehicle.id)
    values: dict[str, Any] = patch.values
    assert values["lock"] is LockState.LOCKED
    assert values["online"] is True
    assert values["doors_open"] is True
    assert values["windows_open"] is False
    assert values["sunroof_open"] is False
    assert values["storage_open"] is False
    assert values["charging_port_open"] is False
    assert values["battery"] == pytest.approx(vehicle.percent_remaining * 100)
    assert values["range_m"] == pytest.approx(vehicle.range_km * 1000)
    assert values["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000, abs=100)
    assert (values["latitude"], values["longitude"]) == (vehicle.latitude, vehicle.longitude)
    assert patch.observed_at is not None
    assert datetime.now(UTC) - patch.observed_at > timedelta(seconds=25)
    assert set(patch.field_observed_at) >= {"battery", "odometer_m", "latitude"}


async def test_read_status_imperial_units_become_metres(sink: RecordingSink) -> None:
    sim = make_simulator(devices=1)
    async with running_adapter(sim, sink, unit_system="imperial") as adapter:
        patch = await adapter.read_status(sim.fleet.ids[0])
    vehicle = sim.fleet[sim.fleet.ids[0]]
    assert patch.values["range_m"] == pytest.approx(vehicle.range_km * 1000, rel=1e-3)
    assert patch.values["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000, rel=1e-3)
    units = {c.path.rsplit("/", 1)[-1] for c in sim.calls if c.vehicle_id}
    assert units >= {"battery", "odometer"}


async def test_read_status_budget_refuses_second_read(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[0]
    await adapter.read_status(vehicle_id)
    before = len(sim.calls)
    with pytest.raises(VendorError) as caught:
        await adapter.read_status(vehicle_id)
    assert caught.value.info.code is ErrorCode.RATE_LIMITED
    assert caught.value.info.retry_after is not None
    assert 0 < caught.value.info.retry_after <= 60
    assert not caught.value.vendor_wide  # this car's budget: the fleet's reads go on
    assert len(sim.calls) == before


async def test_lock_confirmed_by_is_locked(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[0]
    await adapter.read_status(vehicle_id)
    result = await adapter.lock(vehicle_id, locked=False, ctx=command_context(vehicle_id))
    assert result.data == {"status": "success", "message": "Successfully sent request to vehicle"}
    seen: list[LockState] = []
    with anyio.fail_after(10):
        while not seen or seen[-1] is not LockState.UNLOCKED:
            seen.append((await adapter.read_status(vehicle_id)).values["lock"])
    assert seen[-1] is LockState.UNLOCKED
    assert sim.fleet[vehicle_id].locked is False
    # confirmation reads only /security, past the telemetry budget
    after_post = vehicle_calls(sim, vehicle_id)[5:]
    assert after_post[0] == ("POST", "security")
    assert set(after_post[1:]) == {("GET", "security")}
    # once confirmed, the budget is back
    with pytest.raises(VendorError) as caught:
        await adapter.read_status(vehicle_id)
    assert caught.value.info.code is ErrorCode.RATE_LIMITED


async def test_lock_riding_vehicle_refused(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[1]
    sim.fleet[vehicle_id].riding = True
    with pytest.raises(VendorError) as caught:
        await adapter.lock(vehicle_id, locked=False, ctx=command_context(vehicle_id))
    assert caught.value.info.code is ErrorCode.DEVICE_BUSY
    assert caught.value.info.vendor_code == "VEHICLE_STATE:IN_MOTION"
    assert sim.fleet[vehicle_id].locked is True


async def test_read_status_asleep_vehicle_wakes(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[0]
    sim.fleet[vehicle_id].asleep = True
    with pytest.raises(VendorError) as caught:
        await adapter.lock(vehicle_id, locked=False, ctx=command_context(vehicle_id))
    assert caught.value.info.code is ErrorCode.VEHICLE_ASLEEP
    assert caught.value.info.retryable is True
    assert caught.value.info.vendor_code == "VEHICLE_STATE:ASLEEP"
    with anyio.fail_after(10):
        while True:
            try:
                await adapter.lock(vehicle_id, locked=False, ctx=command_context(vehicle_id))
                break
            except VendorError as exc:
                assert exc.info.code is ErrorCode.VEHICLE_ASLEEP
                await anyio.sleep(0.05)
    assert sim.fleet[vehicle_id].asleep is False


async def test_read_status_unsupported_battery_is_skipped(sink: RecordingSink) -> None:
    sim = make_simulator()
    vehicle_id = sim.fleet.ids[2]
    sim.fleet[vehicle_id].electric = False
    async with running_adapter(sim, sink, telemetry_min_interval=0.0) as adapter:
        first = await adapter.read_status(vehicle_id)
        second = await adapter.read_status(vehicle_id)
    assert "battery" not in first.values
    assert "odometer_m" in first.values and "odometer_m" in second.values
    battery_calls = [c for c in sim.calls if c.vehicle_id == vehicle_id and c.path.endswith("/battery")]
    assert [c.status for c in battery_calls] == [501]


async def test_read_status_unknown_device(adapter: SmartcarAdapter) -> None:
    with pytest.raises(VendorError) as caught:
        await adapter.read_status("not-a-vehicle")
    assert caught.value.info.code is ErrorCode.UNKNOWN_DEVICE


@pytest.mark.parametrize(
    ("action", "keys"),
    [
        ("get_security", {"lock", "doors_open", "windows_open"}),
        ("get_battery", {"battery", "range_m"}),
        ("get_location", {"latitude", "longitude"}),
        ("get_odometer", {"odometer_m"}),
    ],
)
async def test_actions_read_one_endpoint(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, action: str, keys: set[str]
) -> None:
    vehicle_id = sim.fleet.ids[0]
    spec = adapter.actions()[action]
    assert spec.idempotent
    result = await spec.handler(vehicle_id, spec.arguments.model_validate({}), command_context(vehicle_id, action))
    assert result.data is not None and keys <= set(result.data)
    assert "observed_at" in result.data
    assert result.reported is not None and keys <= set(result.reported.values)
    if action == "get_security":
        assert result.data["lock"] == "LOCKED"


async def test_read_status_confirming_honours_retry_after(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[0]
    await adapter.lock(vehicle_id, locked=False, ctx=command_context(vehicle_id))
    sim.fleet.inject(vehicle_id, "RATE_LIMIT")
    with pytest.raises(VendorError) as first:
        await adapter.read_status(vehicle_id)
    calls = len(sim.calls)
    with pytest.raises(VendorError) as second:
        await adapter.read_status(vehicle_id)
    assert first.value.info.vendor_code == "RATE_LIMIT:VEHICLE"
    assert second.value.info.code is ErrorCode.RATE_LIMITED
    assert len(sim.calls) == calls
