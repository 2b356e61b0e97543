"""The OKAI bridge driven over a real mosquitto, talking real HTTP to the simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import PATHS
from bridges.okai.models import OkaiCode
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from bridges.okai.tests.helpers import SIGN_KEY, USER_KEY, settings_for
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def _sim(**kwargs: Any) -> OkaiSimulator:
    options: dict[str, Any] = {"user_key": USER_KEY, "devices": 2, "bolt_seconds": 0.1}
    options.update(kwargs)
    return OkaiSimulator(**options)


@asynccontextmanager
async def bridge(sim: OkaiSimulator, broker: str, data_dir: Path, **overrides: Any) -> AsyncIterator[BridgeHarness]:
    async with serve_simulator(sim) as base_url:
        settings = settings_for(base_url, sim, **{"poll_interval": 60.0, **overrides})
        async with BridgeHarness(adapter=OkaiAdapter(settings=settings), broker_url=broker, data_dir=data_dir) as h:
            yield h


@pytest.mark.parametrize("signed", [False, True])
async def test_mqtt_lock_unlock_confirmed_by_status(mqtt_broker: str, tmp_path: Path, signed: bool) -> None:
    sim = _sim(sign_key=SIGN_KEY if signed else None)
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        unlocked = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 10})
        assert unlocked["status"] == "succeeded", unlocked
        await h.wait_retained(imei, "state", lambda s: s["lock"] == "UNLOCKED")
        locked = await h.set(imei, {"lock": "LOCKED", "expires_in": 10})
        assert locked["status"] == "succeeded", locked
        state = await h.wait_retained(imei, "state", lambda s: s["lock"] == "LOCKED")
    switches = sim.calls_to(PATHS["switch_lock"])
    assert [c.params["operate"] for c in switches] == ["unlock", "lock"]
    assert all(1 <= c.params["expireTime"] <= 10 for c in switches)
    assert all(("sign" in c.params) is signed for c in switches)
    assert state["battery"] == 90.0


async def test_mqtt_wrong_signature_failed_auth(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim(sign_key=SIGN_KEY)
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path, sign_key=SecretStr("wrong-sign-key")) as h:
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 10})
    assert final["status"] == "failed"
    assert final["error"]["code"] == "AUTH_FAILED"
    assert final["error"]["vendor_code"] == str(int(OkaiCode.SIGN_ERROR))
    assert "signature" in final["error"]["message"]
    assert sim.fleet[imei].locked is True


async def test_mqtt_expire_time_passed_in_simulator_never_succeeds(mqtt_broker: str, tmp_path: Path) -> None:
    # The cloud takes 3 s to reach the scooter; the command only lives 2 s, so the scooter drops it.
    sim = _sim(delivery_seconds=3.0)
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 2})
        assert final["status"] in {"expired", "failed"}, final
        command = sim.fleet[imei].commands[0]
        while command.outcome == "pending":
            await anyio.sleep(0.2)
            await sim.advance()
    assert command.outcome == "dropped"
    assert sim.calls_to(PATHS["switch_lock"])[0].params["expireTime"] <= 2
    assert sim.fleet[imei].locked is True


async def test_mqtt_offline_scooter_retried_until_expiry(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].set_online(False)
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 3})
        availability = await h.wait_retained(imei, "availability", lambda a: a == "offline")
    assert final["status"] == "expired", final
    attempts = sim.calls_to(PATHS["switch_lock"])
    assert len(attempts) >= 2
    assert all(c.code == OkaiCode.DEVICE_OFFLINE for c in attempts)
    assert availability == "offline"


async def test_mqtt_offline_then_back_online_succeeds(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet.inject(code=int(OkaiCode.DEVICE_OFFLINE), msg="device offline", imei=imei, path=PATHS["switch_lock"])
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 15})
        availability = await h.wait_retained(imei, "availability", lambda a: a == "online")
    assert final["status"] == "succeeded", final
    assert [c.code for c in sim.calls_to(PATHS["switch_lock"])] == [OkaiCode.DEVICE_OFFLINE, OkaiCode.SUCCESS]
    assert availability == "online"


async def test_mqtt_state_has_telemetry_in_metres(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[1]
    sim.fleet[imei].total_m = 42_000.0
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        answer = await h.get(imei)
        assert answer["status"] == "succeeded", answer
        state = await h.wait_retained(imei, "state", lambda s: "total_distance_m" in s)
        availability = await h.wait_retained(imei, "availability")
    assert state["lock"] == "LOCKED"
    assert state["total_distance_m"] == 42_000
    assert state["remaining_distance_m"] == 36_000
    assert state["speed"] == 0.0
    assert (state["latitude"], state["longitude"]) == (52.3702, 4.8952)
    assert availability == "online"


async def test_mqtt_actions_get_status_and_get_location(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        status = await h.request(imei, "get_status")
        location = await h.request(imei, "get_location")
    assert status["status"] == "succeeded", status
    assert status["data"]["lock"] == "LOCKED"
    assert status["data"]["battery"] == 90.0
    assert location["status"] == "succeeded", location
    assert location["data"]["latitude"] == 52.3702
    listing = json.loads(h.retained[f"{h.base}/bridge/okai/devices"])
    entry = next(d for d in listing["devices"] if d["id"] == imei)
    assert entry["actions"] == ["get_location", "get_status"]
    assert entry["desired_fields"] == ["lock"]


async def test_mqtt_refused_command_fails_with_vendor_error(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].refuse = True
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 10})
    assert final["status"] == "failed"
    assert final["error"]["code"] == "VENDOR_ERROR"
    assert final["error"]["vendor_code"] == str(int(OkaiCode.DEVICE_REFUSED))
    assert final["error"]["vendor_message"] == "device refused the command"


async def test_mqtt_vendor_5xx_retried_then_succeeds(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        sim.fleet.fail_http(status=502, count=1)
        final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 15})
    assert final["status"] == "succeeded", final
    assert any(c.code is None for c in sim.calls)  # the 502
    assert sim.calls_to(PATHS["switch_lock"])[-1].code == OkaiCode.SUCCESS


async def test_mqtt_many_scooters_unlock_in_parallel(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim(devices=6)
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        finals: dict[str, dict[str, Any]] = {}

        async def unlock(imei: str) -> None:
            finals[imei] = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 15})

        async with anyio.create_task_group() as tg:
            for imei in sim.fleet.imeis:
                tg.start_soon(unlock, imei)
    assert {imei: f["status"] for imei, f in finals.items()} == dict.fromkeys(sim.fleet.imeis, "succeeded")
    assert all(not s.locked for s in sim.fleet.scooters.values())


async def test_mqtt_poll_reports_ride_and_external_unlock(mqtt_broker: str, tmp_path: Path) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=0.2) as h:
        await h.wait_retained(imei, "state", lambda s: s["lock"] == "LOCKED")
        scooter = sim.fleet[imei]
        scooter.locked = False  # unlocked by someone else (the operator's own app)
        scooter.ride(speed_kmh=3600.0)
        state = await h.wait_retained(imei, "state", lambda s: s["lock"] == "UNLOCKED" and s["speed"] > 0)
        await h.wait_for(lambda: h.events(imei, "drift"))
    assert state["total_distance_m"] >= 1_250_000
    drift = h.events(imei, "drift")[0]["data"]
    assert (drift["field"], drift["from"], drift["to"]) == ("lock", "LOCKED", "UNLOCKED")
