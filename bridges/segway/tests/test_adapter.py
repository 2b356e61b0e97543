"""The adapter against the simulator over real HTTP: mapping, lock, actions and their arguments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridges.segway import SegwayAdapter, SegwaySettings
from bridges.segway.client import PATHS
from bridges.segway.simulator import SegwaySimulator
from contracts.errors import ErrorCode
from contracts.messages import DesiredLock, LockState
from twin.adapter import VendorError
from twin.asgi import ServedApp, serve_asgi
from twin.config import load_vendor_settings
from twin.registry import load_adapter_class
from twin.testing_fakes import RecordingSink, command_context

from .conftest import DEVICES, eventually, make_settings

BIKE = DEVICES[0]


@pytest.fixture
async def adapter(settings: SegwaySettings, sink: RecordingSink) -> AsyncIterator[SegwayAdapter]:
    adapter = SegwayAdapter(settings=settings)
    await adapter.start(sink)
    try:
        yield adapter
    finally:
        await adapter.stop()


def test_registry_loads_segway() -> None:
    assert load_adapter_class("segway") is SegwayAdapter
    assert SegwayAdapter.settings_model is SegwaySettings
    assert "bluetooth_key" in SegwayAdapter.secret_fields


def test_settings_strict_and_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_ID", "U1234")
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("LOCKTWIN_SEGWAY_DEVICES", '["861477038719116"]')
    settings = SegwaySettings()
    assert settings.api_base_url == "https://us-api.segwaydiscovery.com"
    assert settings.devices == ["861477038719116"]
    assert "s3cret" not in repr(settings)
    with pytest.raises(ValidationError):
        SegwaySettings(client_id="E1", client_secret="x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SegwaySettings(client_id="E1", client_secret="x", devices=["a", "a"])


def test_push_only_is_said_with_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOML has no null and the environment is text: ``"off"`` turns polling off from either."""
    table = {"client_id": "E1", "client_secret": "x"}
    assert load_vendor_settings(SegwaySettings, {**table, "poll_interval": "off"}).poll_interval is None  # type: ignore[attr-defined]
    monkeypatch.setenv("LOCKTWIN_SEGWAY_POLL_INTERVAL", "off")
    assert load_vendor_settings(SegwaySettings, table).poll_interval is None  # type: ignore[attr-defined]
    monkeypatch.setenv("LOCKTWIN_SEGWAY_POLL_INTERVAL", "often")
    with pytest.raises(ValueError, match="poll_interval"):
        load_vendor_settings(SegwaySettings, table)


@pytest.mark.anyio
async def test_list_devices_from_settings(settings: SegwaySettings, adapter: SegwayAdapter) -> None:
    devices = await adapter.list_devices()
    assert [d.id for d in devices] == DEVICES
    assert all(d.poll_interval == settings.poll_interval for d in devices)
    assert "lock" in devices[0].capabilities


@pytest.mark.anyio
async def test_read_status_values_in_twin_units(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    vehicle = sim.fleet[BIKE]
    patch = await adapter.read_status(BIKE)
    values = patch.values
    assert values["lock"] == LockState.LOCKED
    assert values["online"] is True
    assert values["battery"] == round(vehicle.battery)
    assert values["remaining_range_m"] == vehicle.remaining_range * 10
    assert values["odometer_m"] == round(vehicle.odometer)
    assert values["speed_mode"] == "medium"
    assert values["signal"] == vehicle.network_signal
    assert values["latitude"] == round(vehicle.latitude, 6)
    assert values["satellites"] == vehicle.satellites
    assert {"hdop", "altitude", "charging", "speed"} <= set(values)
    assert patch.observed_at == datetime.fromtimestamp(int(vehicle.status_time), UTC)
    assert patch.observed("latitude") == datetime.fromtimestamp(int(vehicle.gps_time), UTC)
    assert not {"key", "bluetooth_key"} & set(values)


@pytest.mark.anyio
async def test_read_status_offline_reports_offline(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].go_offline()
    patch = await adapter.read_status(BIKE)
    assert patch.values == {"online": False}


@pytest.mark.anyio
async def test_read_status_without_fix_keeps_status(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].has_fix = False
    patch = await adapter.read_status(BIKE)
    assert "latitude" not in patch.values
    assert patch.values["lock"] == LockState.LOCKED


@pytest.mark.anyio
async def test_read_status_unknown_device(adapter: SegwayAdapter) -> None:
    with pytest.raises(VendorError) as err:
        await adapter.read_status("123")
    assert err.value.info.code == ErrorCode.UNKNOWN_DEVICE


@pytest.mark.anyio
async def test_set_desired_lock_confirmed_by_status(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    await adapter.set_desired(BIKE, "lock", DesiredLock.UNLOCKED, command_context(BIKE))
    field = adapter.desired_fields()["lock"]

    async def confirmed() -> bool:
        return field.confirmed(DesiredLock.UNLOCKED, (await adapter.read_status(BIKE)).values)

    await eventually(confirmed)
    assert sim.fleet[BIKE].locked is False


@pytest.mark.anyio
async def test_lock_while_riding_busy_not_retried(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].ride()
    with pytest.raises(VendorError) as err:
        await adapter.lock(BIKE, locked=True, ctx=command_context(BIKE))
    assert err.value.info.code == ErrorCode.DEVICE_BUSY
    assert err.value.info.retryable is False
    assert len(sim.calls_to(PATHS["lock"])) == 1


ACTION_CASES: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = [
    ("find", {}, "sound", {"iotCode": BIKE, "controlType": 2}),
    ("set_switches", {"alert_sensitivity": 3}, "switch_setting", {"iotCode": BIKE, "alertSensitivity": 3}),
    (
        "enable_switches",
        {"kickstand_check": True, "low_power_switch": False},
        "switch_enable",
        {"iotCode": BIKE, "assistedMode": 0, "kickstandCheck": 2, "lowPowerSwitch": 1},
    ),
    (
        "set_ambient_light",
        {"brightness": "high", "parking": {"on": True, "color": "cyan"}},
        "ambient_light",
        {"iotCode": BIKE, "bright": 3, "parkingMode": {"mode": 2, "color": 5}},
    ),
    (
        "set_sound",
        {"enabled": True, "volume": 3, "sounds": {"toot": 0}},
        "sound_setting",
        {"iotCode": BIKE, "workMode": 2, "volume": 3, "ebcqMask": {"toot": 0}},
    ),
    (
        "set_upload_interval",
        {"location": {"unlocked": 10, "locked": 900}, "status": {"riding": 10, "not_riding": 60, "locked": 900}},
        "upload_interval",
        {
            "iotCode": BIKE,
            "locationInterval": {"unlockStatus": 10, "lockStatus": 900},
            "statusInterval": {"ridingStatus": 10, "nonRiding": 60, "lockStatus": 900},
        },
    ),
    ("get_battery", {}, "battery_info", {"iotCode": BIKE}),
    ("get_location", {}, "location", {"iotCode": BIKE, "realTimeLocation": "true"}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "arguments", "path", "wire"), ACTION_CASES)
async def test_action_sends_document_request(
    adapter: SegwayAdapter,
    sim: SegwaySimulator,
    name: str,
    arguments: dict[str, Any],
    path: str,
    wire: dict[str, Any] | None,
) -> None:
    spec = adapter.actions()[name]
    result = await spec.handler(BIKE, spec.arguments.model_validate(arguments), command_context(BIKE, name))
    assert result.data is not None
    [call] = sim.calls_to(PATHS[path])
    assert call.params == wire


@pytest.mark.anyio
async def test_action_battery_cover_needs_unlocked(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    spec = adapter.actions()["open_battery_cover"]
    with pytest.raises(VendorError) as err:
        await spec.handler(BIKE, spec.arguments.model_validate({}), command_context(BIKE))
    assert err.value.info.code == ErrorCode.POLICY_DENIED
    sim.fleet[BIKE].locked = False
    result = await spec.handler(BIKE, spec.arguments.model_validate({}), command_context(BIKE))
    assert result.data == {"opened": True}


@pytest.mark.anyio
async def test_action_get_battery_and_location_report(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    battery = adapter.actions()["get_battery"]
    result = await battery.handler(BIKE, battery.arguments.model_validate({}), command_context(BIKE))
    assert result.reported is not None
    assert result.reported.values["battery"] == round(sim.fleet[BIKE].battery)
    assert result.data is not None
    assert result.data["iot_voltage"] == 4.12
    location = adapter.actions()["get_location"]
    result = await location.handler(BIKE, location.arguments.model_validate({"realtime": False}), command_context(BIKE))
    assert result.reported is not None
    assert result.reported.values["longitude"] == round(sim.fleet[BIKE].longitude, 6)


@pytest.mark.anyio
async def test_action_bluetooth_key_sensitive(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    actions = adapter.actions()
    assert actions["get_bluetooth_key"].sensitive
    assert actions["set_bluetooth_key"].sensitive
    setter = actions["set_bluetooth_key"]
    args = setter.arguments.model_validate({"key": "Zx12Cv34"})
    assert "Zx12Cv34" not in repr(args)
    result = await setter.handler(BIKE, args, command_context(BIKE))
    assert result.data == {"changed": True}
    getter = actions["get_bluetooth_key"]
    result = await getter.handler(BIKE, getter.arguments.model_validate({}), command_context(BIKE))
    assert result.data == {"key": "Zx12Cv34"}
    assert result.reported is None
    patch = await adapter.read_status(BIKE)
    assert "Zx12Cv34" not in patch.model_dump_json()


OK_STATUS = {"riding": 10, "not_riding": 60, "locked": 900}
BAD_ARGUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("set_upload_interval", {"location": {"unlocked": 9, "locked": 900}, "status": OK_STATUS}),
    ("set_upload_interval", {"location": {"unlocked": 10, "locked": 65536}, "status": OK_STATUS}),
    ("set_sound", {"volume": 4}),
    ("set_sound", {"volume": 0}),
    ("set_sound", {"sounds": {"toot": 3}}),
    ("set_switches", {"alert_sensitivity": 4}),
    ("set_switches", {"low_power_value": 9}),
    ("set_switches", {}),
    ("enable_switches", {}),
    ("set_ambient_light", {"brightness": "blinding", "parking": {"on": True}}),
    ("set_ambient_light", {"brightness": "low", "parking": {"on": True, "color": "pink"}}),
    ("set_ambient_light", {"brightness": "low"}),
    ("set_bluetooth_key", {"key": "abc"}),
    ("set_bluetooth_key", {"key": "abcd-123"}),
    ("find", {"volume": 1}),
    ("get_bluetooth_key", {"iotCode": "1"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "arguments"), BAD_ARGUMENTS)
def test_action_arguments_validated_before_any_call(name: str, arguments: dict[str, Any]) -> None:
    adapter = SegwayAdapter(settings=SegwaySettings(client_id="E1", client_secret="x"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        adapter.actions()[name].arguments.model_validate(arguments)


def test_actions_table_complete() -> None:
    adapter = SegwayAdapter(settings=SegwaySettings(client_id="E1", client_secret="x"))  # type: ignore[arg-type]
    assert set(adapter.actions()) == {
        "open_battery_cover",
        "find",
        "set_switches",
        "enable_switches",
        "set_ambient_light",
        "set_sound",
        "set_bluetooth_key",
        "get_bluetooth_key",
        "set_upload_interval",
        "get_battery",
        "get_location",
    }


@pytest.mark.anyio
async def test_simulator_kit_drives_adapter(sink: RecordingSink) -> None:
    kit = SegwayAdapter.simulator(devices=2)
    assert len(kit.device_ids) == 2
    async with serve_asgi(kit.app) as served:
        settings = load_vendor_settings(SegwaySettings, kit.settings(served.url))
        assert isinstance(settings, SegwaySettings)
        adapter = SegwayAdapter(settings=settings)
        await adapter.start(sink)
        try:
            assert [d.id for d in await adapter.list_devices()] == list(kit.device_ids)
            patch = await adapter.read_status(kit.device_ids[0])
            assert patch.values["lock"] == LockState.LOCKED
        finally:
            await adapter.stop()


def test_settings_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "segway.secret"
    secret_file.write_text("from-a-file\n")
    settings = SegwaySettings(client_id="A1", client_secret_file=secret_file)  # type: ignore[call-arg]
    assert settings.client_secret.get_secret_value() == "from-a-file"
    with pytest.raises(ValidationError, match="cannot read"):
        SegwaySettings(client_id="A1", client_secret_file=tmp_path / "missing")  # type: ignore[call-arg]


def test_settings_platform_code_is_client_id() -> None:
    settings = SegwaySettings(platform_code="C42", client_secret="x")  # type: ignore[call-arg]
    assert settings.client_id == "C42"
    assert settings.api_base_url == "https://cn-api.segwaydiscovery.com"


@pytest.mark.anyio
async def test_read_status_error_propagates_plain(adapter: SegwayAdapter, sim: SegwaySimulator) -> None:
    sim.restricted = True
    with pytest.raises(VendorError) as err:
        await adapter.read_status(BIKE)
    assert err.value.info.code == ErrorCode.PERMISSION_DENIED


@pytest.mark.anyio
async def test_read_status_without_location_polling(
    served: ServedApp, sim: SegwaySimulator, sink: RecordingSink
) -> None:
    adapter = SegwayAdapter(settings=make_settings(served.url, poll_location=False))
    await adapter.start(sink)
    try:
        patch = await adapter.read_status(BIKE)
    finally:
        await adapter.stop()
    assert "latitude" not in patch.values
    assert sim.calls_to(PATHS["location"]) == []
