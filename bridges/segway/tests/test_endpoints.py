"""Every endpoint of the document through the client, checked on the simulated cloud's side."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from bridges.segway.client import PATHS, SegwayClient
from bridges.segway.models import (
    AmbientLightRequest,
    BluetoothKeyRequest,
    LampEffect,
    LocationInterval,
    SoundControlRequest,
    SoundMask,
    SoundSettingRequest,
    StatusInterval,
    SwitchEnableRequest,
    SwitchSettingRequest,
    UploadIntervalRequest,
    VehicleLocation,
    VehicleStatus,
)
from bridges.segway.simulator import SegwaySimulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.asgi import ServedApp

from .conftest import DEVICES, eventually

BIKE = DEVICES[0]


@pytest.mark.anyio
async def test_status_fields(client: SegwayClient, sim: SegwaySimulator) -> None:
    vehicle = sim.fleet[BIKE]
    status = await client.status(BIKE)
    assert status.online is True
    assert status.power_percent == round(vehicle.battery)
    assert status.remaining_range == vehicle.remaining_range
    assert status.network_signal == vehicle.network_signal
    assert status.status_utc_time == int(vehicle.status_time)
    [call] = sim.calls_to(PATHS["status"])
    assert call.method == "GET"
    assert call.params == {"iotCode": BIKE}


@pytest.mark.anyio
async def test_location_realtime_flag(client: SegwayClient, sim: SegwaySimulator) -> None:
    plain = await client.location(BIKE)
    fresh = await client.location(BIKE, realtime=True)
    assert plain.latitude == fresh.latitude == round(sim.fleet[BIKE].latitude, 6)
    assert plain.satellite_number == sim.fleet[BIKE].satellites
    calls = sim.calls_to(PATHS["location"])
    assert "realTimeLocation" not in calls[0].params
    assert calls[1].params["realTimeLocation"] == "true"


@pytest.mark.anyio
async def test_location_no_fix(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].has_fix = False
    with pytest.raises(VendorError) as err:
        await client.location(BIKE)
    assert err.value.info.vendor_code == "15400"


@pytest.mark.anyio
async def test_battery_info_fields(client: SegwayClient, sim: SegwaySimulator) -> None:
    info = await client.battery_info(BIKE)
    assert info.vehicle_percent == round(sim.fleet[BIKE].battery)
    assert info.battery_data[0].temperature == 25  # the document's "temperatrue"
    assert info.iot_voltage == 412


@pytest.mark.anyio
async def test_bluetooth_key_get_and_set(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.set_bluetooth_key(BluetoothKeyRequest(iot_code=BIKE, key="4BKNwi77"))
    assert sim.fleet[BIKE].bluetooth_key == "4BKNwi77"
    answer = await client.get_bluetooth_key(BIKE)
    assert answer.key == "4BKNwi77"
    assert "4BKNwi77" not in repr(answer)
    with pytest.raises(ValidationError):
        BluetoothKeyRequest(iot_code=BIKE, key="short")


@pytest.mark.anyio
async def test_lock_and_unlock_bolt_takes_time(client: SegwayClient, sim: SegwaySimulator) -> None:
    vehicle = sim.fleet[BIKE]
    vehicle.bolt_seconds = 0.5
    await client.unlock(BIKE)
    assert (await client.status(BIKE)).locked is True  # the bolt is still moving

    async def unlocked() -> bool:
        return (await client.status(BIKE)).locked is False

    await eventually(unlocked)
    assert vehicle.locked is False
    await client.lock(BIKE)

    async def locked() -> bool:
        return (await client.status(BIKE)).locked is True

    await eventually(locked)
    [lock_call] = sim.calls_to(PATHS["lock"])
    assert lock_call.method == "POST"
    assert lock_call.params == {"iotCode": BIKE}


@pytest.mark.anyio
async def test_lock_while_riding_busy(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].ride()
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    assert err.value.info.code == ErrorCode.DEVICE_BUSY
    assert err.value.info.retryable is False
    sim.fleet[BIKE].riding_code = 15997
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    assert err.value.info.vendor_code == "15997"


@pytest.mark.anyio
async def test_lock_geofence_and_jam(client: SegwayClient, sim: SegwaySimulator) -> None:
    vehicle = sim.fleet[BIKE]
    vehicle.locked = False
    vehicle.geofence_denied = True
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    assert err.value.info.code == ErrorCode.POLICY_DENIED
    vehicle.geofence_denied = False
    vehicle.jammed = True
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    assert err.value.info.vendor_code == "15603"


@pytest.mark.anyio
async def test_offline_vehicle_commands_offline(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].go_offline()
    for call in (client.lock, client.unlock, client.status, client.open_battery_cover):
        with pytest.raises(VendorError) as err:
            await call(BIKE)
        assert err.value.info.code == ErrorCode.DEVICE_OFFLINE
        assert err.value.info.retryable is True


@pytest.mark.anyio
async def test_battery_cover_only_unlocked(client: SegwayClient, sim: SegwaySimulator) -> None:
    with pytest.raises(VendorError) as err:
        await client.open_battery_cover(BIKE)
    assert err.value.info.vendor_code == "15635"
    sim.fleet[BIKE].locked = False
    await client.open_battery_cover(BIKE)
    assert sim.fleet[BIKE].battery_cover_open is True


@pytest.mark.anyio
async def test_sound_find(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.sound(SoundControlRequest(iot_code=BIKE))
    assert sim.fleet[BIKE].finds == 1
    [call] = sim.calls_to(PATHS["sound"])
    assert call.params == {"iotCode": BIKE, "controlType": 2}


@pytest.mark.anyio
async def test_settings_endpoints_wire_bodies(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.switch_setting(SwitchSettingRequest(iot_code=BIKE, alert_sensitivity=2, low_power_value=15))
    await client.switch_enable(SwitchEnableRequest(iot_code=BIKE, assisted_mode=2, kickstand_check=1))
    await client.ambient_light(
        AmbientLightRequest(
            iot_code=BIKE,
            bright=1,
            parking_mode=LampEffect(mode=2, color=3),
            ready_mode=LampEffect(mode=2, color=1),
        )
    )
    await client.sound_setting(
        SoundSettingRequest(iot_code=BIKE, work_mode=2, volume=1, ebcq_mask=SoundMask(unlocked=1, gear_up=0))
    )
    await client.upload_interval(
        UploadIntervalRequest(
            iot_code=BIKE,
            location_interval=LocationInterval(unlock_status=10, lock_status=900),
            status_interval=StatusInterval(riding_status=10, non_riding=60, lock_status=900),
        )
    )
    saved = sim.fleet[BIKE].settings
    assert saved["switch"] == {"alertSensitivity": 2, "lowPowerValue": 15}
    assert saved["able-switch"] == {"assistedMode": 2, "kickstandCheck": 1}
    assert saved["ambient"] == {
        "bright": 1,
        "parkingMode": {"mode": 2, "color": 3},
        "readyMode": {"mode": 2, "color": 1},
    }
    assert saved["sound"] == {"workMode": 2, "volume": 1, "ebcqMask": {"unlocked": 1, "gearUp": 0}}
    assert saved["interval"] == {
        "locationInterval": {"unlockStatus": 10, "lockStatus": 900},
        "statusInterval": {"ridingStatus": 10, "nonRiding": 60, "lockStatus": 900},
    }


@pytest.mark.anyio
async def test_upload_interval_unsupported(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].supports_intervals = False
    request = UploadIntervalRequest(
        iot_code=BIKE,
        location_interval=LocationInterval(unlock_status=10, lock_status=900),
        status_interval=StatusInterval(riding_status=10, non_riding=60, lock_status=900),
    )
    with pytest.raises(VendorError) as err:
        await client.upload_interval(request)
    assert err.value.info.code == ErrorCode.UNSUPPORTED


def test_request_models_enforce_document_ranges() -> None:
    with pytest.raises(ValidationError):
        LocationInterval(unlock_status=9, lock_status=900)
    with pytest.raises(ValidationError):
        StatusInterval(riding_status=10, non_riding=65536, lock_status=900)
    with pytest.raises(ValidationError):
        SoundSettingRequest(iot_code=BIKE, work_mode=2, volume=4)
    with pytest.raises(ValidationError):
        SwitchSettingRequest(iot_code=BIKE, low_power_value=31)
    with pytest.raises(ValidationError):
        LampEffect(mode=2, color=8)


def test_models_accept_field_name_variants() -> None:
    a = VehicleStatus.model_validate({"iotCode": 861477038719116, "remainingRange": 1230, "statusUtcTime": 1})
    b = VehicleStatus.model_validate({"iotCode": "861477038719116", "remainderRange": 1230})
    assert a.remaining_range == b.remaining_range == 1230
    assert a.iot_code == b.iot_code
    c = VehicleLocation.model_validate({"iotCode": "1", "gpsUTCTime": 1591067719})
    d = VehicleLocation.model_validate({"iotCode": "1", "gpsUtcTime": "1591067719"})
    assert c.gps_utc_time == d.gps_utc_time == 1591067719


@pytest.mark.anyio
async def test_simulator_checks_bearer_and_parameters(sim: SegwaySimulator, served: ServedApp) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        no_token = (await http.get(PATHS["status"], params={"iotCode": BIKE})).json()
        assert no_token["code"] == 15101
        assert no_token["data"] is None
        assert {"msg", "t", "opId"} <= set(no_token)
        bad_grant = await http.post(
            PATHS["token"], data={"client_id": "x", "client_secret": "y", "grant_type": "password"}
        )
        assert bad_grant.status_code == 400
        token = (
            await http.post(
                PATHS["token"],
                data={
                    "client_id": sim.client_id,
                    "client_secret": sim.client_secret,
                    "grant_type": "client_credentials",
                },
            )
        ).json()
        assert token["token_type"] == "bearer"
        headers = {"Authorization": f"bearer {token['access_token']}"}
        missing = (await http.post(PATHS["lock"], json={}, headers=headers)).json()
        assert missing["code"] == 15004
        numeric = (await http.post(PATHS["lock"], json={"iotCode": int(BIKE)}, headers=headers)).json()
        assert numeric["code"] == 0
        battery = (await http.get(PATHS["battery_info"], params={"iotCode": BIKE}, headers=headers)).json()
        assert "resId" in battery
        bad_range = (
            await http.post(PATHS["sound_setting"], json={"iotCode": BIKE, "workMode": 2, "volume": 9}, headers=headers)
        ).json()
        assert bad_range["code"] == 15004


@pytest.mark.anyio
async def test_simulator_control_needs_json(sim: SegwaySimulator, served: ServedApp) -> None:
    sim.issue_token()
    [token] = sim.tokens
    async with httpx.AsyncClient(base_url=served.url, headers={"Authorization": f"bearer {token}"}) as http:
        form = (await http.post(PATHS["lock"], data={"iotCode": BIKE})).json()
        assert form["code"] == 15004
        assert (await http.post(PATHS["lock"], json={"iotCode": BIKE})).json()["code"] == 0


def test_location_without_usable_fix() -> None:
    assert not VehicleLocation.model_validate({"iotCode": "1", "latitude": 0.0, "longitude": 0.0}).has_fix
    assert not VehicleLocation.model_validate({"iotCode": "1", "latitude": 91.0, "longitude": 4.0}).has_fix
    assert not VehicleLocation.model_validate({"iotCode": "1", "latitude": 52.0}).has_fix
    assert VehicleLocation.model_validate({"iotCode": "1", "latitude": 0.0, "longitude": 4.0}).has_fix
