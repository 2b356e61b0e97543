from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr, ValidationError

import bridges.okai
from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import PATHS
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import OkaiSimulator
from bridges.okai.tests.helpers import SIGN_KEY, USER_KEY, served_adapter
from contracts.errors import ErrorCode
from contracts.messages import LockState
from twin.adapter import VendorError
from twin.asgi import serve_asgi
from twin.config import load_vendor_settings
from twin.registry import load_adapter_class
from twin.testing_fakes import RecordingSink, command_context


def _sim(**kwargs: object) -> OkaiSimulator:
    options: dict[str, object] = {"user_key": USER_KEY, "devices": 2, "bolt_seconds": 0.05}
    options.update(kwargs)
    return OkaiSimulator(**options)  # type: ignore[arg-type]


async def _until_lock(adapter: OkaiAdapter, imei: str, want: LockState, *, reads: int = 100) -> LockState:
    """Poll read_status like the runtime's confirmation does (bounded number of reads, no timing)."""
    lock = LockState.UNKNOWN
    for _ in range(reads):
        lock = (await adapter.read_status(imei)).values["lock"]
        if lock == want:
            break
        await anyio.sleep(0.05)
    return lock


def test_public_all_pinned() -> None:
    assert bridges.okai.__all__ == ["OkaiAdapter", "OkaiClient", "OkaiSettings"]


def test_registry_loads_okai() -> None:
    assert load_adapter_class("okai") is OkaiAdapter


def test_settings_env_prefix_and_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKTWIN_OKAI_USER_KEY", USER_KEY)
    monkeypatch.setenv("LOCKTWIN_OKAI_SIGN_KEY", SIGN_KEY)
    settings = OkaiSettings(devices=["863795050079434"])
    assert settings.user_key.get_secret_value() == USER_KEY
    assert USER_KEY not in repr(settings) and SIGN_KEY not in repr(settings)
    with pytest.raises(ValidationError):
        OkaiSettings(devices=[], colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        OkaiSettings(devices=["86379 5050079434"])


def test_settings_keys_from_files(tmp_path: Path) -> None:
    (tmp_path / "user").write_text(USER_KEY + "\n")
    (tmp_path / "sign").write_text(SIGN_KEY + "\n")
    settings = OkaiSettings(user_key_file=tmp_path / "user", sign_key_file=tmp_path / "sign")
    assert settings.sign_key is not None
    assert settings.sign_key.get_secret_value() == SIGN_KEY


@pytest.mark.anyio
async def test_list_devices_from_settings() -> None:
    sim = _sim()
    async with served_adapter(sim, poll_interval=12.0) as adapter:
        devices = await adapter.list_devices()
    assert [d.id for d in devices] == sim.fleet.imeis
    assert all(d.poll_interval == 12.0 and d.capabilities == {"lock", "location", "battery"} for d in devices)


@pytest.mark.anyio
@pytest.mark.parametrize("signed", [False, True])
async def test_lock_unlock_confirmed_by_status(signed: bool) -> None:
    sim = _sim(sign_key=SIGN_KEY if signed else None)
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        assert (await adapter.read_status(imei)).values["lock"] == LockState.LOCKED
        result = await adapter.lock(imei, locked=False, ctx=command_context(imei))
        assert result.data is None and result.reported is None
        assert await _until_lock(adapter, imei, LockState.UNLOCKED) == LockState.UNLOCKED
        await adapter.lock(imei, locked=True, ctx=command_context(imei))
        assert await _until_lock(adapter, imei, LockState.LOCKED) == LockState.LOCKED
    assert [c.params["operate"] for c in sim.calls_to(PATHS["switch_lock"])] == ["unlock", "lock"]


@pytest.mark.anyio
async def test_lock_expire_time_is_remaining_seconds() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        await adapter.lock(imei, locked=True, ctx=command_context(imei, seconds=7.9))
        await adapter.lock(imei, locked=True, ctx=command_context(imei, seconds=0.2))
        await adapter.lock(imei, locked=True, ctx=command_context(imei, seconds=-5))
    assert [c.params["expireTime"] for c in sim.calls_to(PATHS["switch_lock"])] == [7, 1, 1]


@pytest.mark.anyio
async def test_lock_expire_time_passed_in_simulator_dropped() -> None:
    sim = _sim(delivery_seconds=1.3)
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        await adapter.lock(imei, locked=False, ctx=command_context(imei, seconds=1.0))
        while sim.fleet[imei].commands[0].outcome == "pending":
            await anyio.sleep(0.1)
            await sim.advance()
        assert sim.fleet[imei].commands[0].outcome == "dropped"
        assert (await adapter.read_status(imei)).values["lock"] == LockState.LOCKED


@pytest.mark.anyio
async def test_lock_offline_device_offline_retryable() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].set_online(False)
    async with served_adapter(sim) as adapter:
        with pytest.raises(VendorError) as caught:
            await adapter.lock(imei, locked=False, ctx=command_context(imei))
        patch = await adapter.read_status(imei)
    assert caught.value.info.code is ErrorCode.DEVICE_OFFLINE
    assert caught.value.info.retryable is True
    assert patch.values["online"] is False
    assert patch.observed("online") is not None and patch.observed_at is not None
    assert patch.observed("online") >= patch.observed_at  # type: ignore[operator]


@pytest.mark.anyio
async def test_read_status_offline_code_reports_offline() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet.inject(code=20002, msg="device offline", imei=imei)
    async with served_adapter(sim) as adapter:
        patch = await adapter.read_status(imei)
    assert patch.values == {"online": False}


@pytest.mark.anyio
async def test_read_status_unknown_device() -> None:
    sim = _sim()
    async with served_adapter(sim) as adapter:
        with pytest.raises(VendorError) as caught:
            await adapter.read_status("999")
    assert caught.value.info.code is ErrorCode.UNKNOWN_DEVICE
    assert sim.calls == []


@pytest.mark.anyio
async def test_read_status_units_converted() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    scooter = sim.fleet[imei]
    scooter.total_m, scooter.battery, scooter.range_m = 1_234_560.0, 50.0, 40_000.0
    async with served_adapter(sim) as adapter:
        values = (await adapter.read_status(imei)).values
    assert values["total_distance_m"] == 1_234_560
    assert values["remaining_distance_m"] == 20_000
    assert values["battery"] == 50.0
    assert values["speed"] == 0.0
    assert values["online"] is True
    assert (values["latitude"], values["longitude"]) == (52.3702, 4.8952)


@pytest.mark.anyio
async def test_read_status_distance_unit_miles() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].total_m = 10_000.0  # the simulator reports 10.0 units
    async with served_adapter(sim, distance_unit="mi") as adapter:
        values = (await adapter.read_status(imei)).values
    assert values["total_distance_m"] == 16_093


@pytest.mark.anyio
async def test_read_status_riding_distance_grows() -> None:
    sim = _sim(bolt_seconds=0.0, delivery_seconds=0.0)
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        await adapter.lock(imei, locked=False, ctx=command_context(imei))
        sim.fleet[imei].ride(speed_kmh=3600.0)  # a kilometre a second keeps the test short
        before = (await adapter.read_status(imei)).values
        await anyio.sleep(0.2)
        after = (await adapter.read_status(imei)).values
        await adapter.lock(imei, locked=True, ctx=command_context(imei))
        parked = (await adapter.read_status(imei)).values
    assert after["speed"] == 3600.0
    assert after["total_distance_m"] > before["total_distance_m"]
    assert after["remaining_distance_m"] < before["remaining_distance_m"]
    assert parked["lock"] == LockState.LOCKED and parked["speed"] == 0.0


@pytest.mark.anyio
async def test_lock_jammed_never_confirms() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].jammed = True
    async with served_adapter(sim) as adapter:
        await adapter.lock(imei, locked=False, ctx=command_context(imei))
        assert await _until_lock(adapter, imei, LockState.UNLOCKED, reads=5) == LockState.LOCKED
    assert sim.fleet[imei].commands[0].outcome == "jammed"


@pytest.mark.anyio
async def test_actions_get_status_and_get_location() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        actions = adapter.actions()
        assert set(actions) == {"get_status", "get_location"}
        status = await actions["get_status"].handler(imei, None, command_context(imei, name="get_status"))
        location = await actions["get_location"].handler(imei, None, command_context(imei, name="get_location"))
    assert status.data is not None and status.data["lock"] == "LOCKED"
    assert status.reported is not None and status.reported.values["battery"] == 90.0
    assert location.data is not None
    assert (location.data["latitude"], location.data["longitude"]) == (52.3702, 4.8952)
    assert "observed_at" in location.data


def test_settings_secret_str_never_printed() -> None:
    settings = OkaiSettings(user_key=SecretStr(USER_KEY), sign_key=SecretStr(SIGN_KEY))
    text = f"{settings} {settings!r} {settings.model_dump()}"
    assert USER_KEY not in text and SIGN_KEY not in text


@pytest.mark.anyio
async def test_read_status_lock_field_configurable() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with served_adapter(sim) as adapter:
        assert (await adapter.read_status(imei)).values["lock"] == LockState.LOCKED
    async with served_adapter(sim, lock_field="lockState", locked_values=["LOCK"]) as adapter:
        assert (await adapter.read_status(imei)).values["lock"] == LockState.UNKNOWN
    async with served_adapter(sim, locked_values=[0], unlocked_values=[1]) as adapter:
        assert (await adapter.read_status(imei)).values["lock"] == LockState.UNLOCKED


@pytest.mark.anyio
async def test_simulator_kit_drives_adapter() -> None:
    kit = OkaiAdapter.simulator(devices=2)
    assert len(kit.device_ids) == 2
    async with serve_asgi(kit.app) as served:
        settings = load_vendor_settings(OkaiAdapter.settings_model, kit.settings(served.url))
        adapter = OkaiAdapter(settings=settings)
        await adapter.start(RecordingSink())
        try:
            await adapter.lock(kit.device_ids[0], locked=False, ctx=command_context(kit.device_ids[0]))
            assert await _until_lock(adapter, kit.device_ids[0], LockState.UNLOCKED) == LockState.UNLOCKED
        finally:
            await adapter.stop()
