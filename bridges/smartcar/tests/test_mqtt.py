"""The Smartcar bridge over a real mosquitto, talking real HTTP to the simulator (the issue's proof)."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.cli import link_account
from bridges.smartcar.simulator import SmartcarSimulator, serve_simulator
from bridges.smartcar.tokens import TokenStore
from twin.asgi import ServedApp
from twin.testing import BridgeHarness

from .conftest import make_settings, make_simulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def bridge(
    sim: SmartcarSimulator, broker: str, data_dir: Path, *, link: bool = True, **overrides: Any
) -> AsyncIterator[tuple[BridgeHarness, ServedApp]]:
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url, **{"poll_interval": 2.0, **overrides})
        if link:
            await link_account(settings, data_dir=data_dir / "smartcar", code=sim.issue_code())
        adapter = SmartcarAdapter(settings=settings)
        async with BridgeHarness(adapter=adapter, broker_url=broker, data_dir=data_dir) as harness:
            yield harness, served


async def polled(h: BridgeHarness, vehicle_id: str) -> dict[str, Any]:
    """Wait for the bridge's first poll of the vehicle (a full telemetry read) to be in its state."""
    state: dict[str, Any] = await h.wait_retained(vehicle_id, "state", lambda s: "odometer_m" in s)
    return state


async def test_mqtt_lock_unlock_confirmed_by_is_locked(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle_id = sim.fleet.ids[0]
    async with bridge(sim, mqtt_broker, tmp_path) as (h, _):
        unlocked = await h.set(vehicle_id, {"lock": "UNLOCKED", "expires_in": 20})
        assert unlocked["status"] == "succeeded", unlocked
        await h.wait_retained(vehicle_id, "state", lambda s: s["lock"] == "UNLOCKED")
        locked = await h.set(vehicle_id, {"lock": "LOCKED", "expires_in": 20})
        assert locked["status"] == "succeeded", locked
        await h.wait_retained(vehicle_id, "state", lambda s: s["lock"] == "LOCKED")
    posts = [c.body for c in sim.calls if c.vehicle_id == vehicle_id and c.method == "POST"]
    assert posts == [{"action": "UNLOCK"}, {"action": "LOCK"}]
    assert sim.fleet[vehicle_id].locked is True


async def test_mqtt_telemetry_into_state(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[1]]
    vehicle.open("windows", "backLeft")
    async with bridge(sim, mqtt_broker, tmp_path) as (h, _):
        state = await h.wait_retained(vehicle.id, "state", lambda s: "odometer_m" in s)
        devices = await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/smartcar/devices"))
    assert state["lock"] == "LOCKED"
    assert state["online"] is True
    assert state["doors_open"] is False
    assert state["windows_open"] is True
    assert state["battery"] == pytest.approx(vehicle.percent_remaining * 100)
    assert state["range_m"] == pytest.approx(vehicle.range_km * 1000)
    assert state["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000)
    assert (state["latitude"], state["longitude"]) == (vehicle.latitude, vehicle.longitude)
    assert b"get_battery" in devices and vehicle.id.encode() in devices


async def test_mqtt_requests_read_endpoints(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[0]]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=300.0) as (h, _):
        answers = {
            name: await h.request(vehicle.id, name)
            for name in ("get_security", "get_battery", "get_location", "get_odometer")
        }
        state = await h.wait_retained(vehicle.id, "state", lambda s: "odometer_m" in s)
    assert all(a["status"] == "succeeded" for a in answers.values()), answers
    assert answers["get_security"]["data"]["lock"] == "LOCKED"
    assert answers["get_battery"]["data"]["battery"] == pytest.approx(vehicle.percent_remaining * 100)
    assert answers["get_location"]["data"]["latitude"] == vehicle.latitude
    assert answers["get_odometer"]["data"]["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000)
    assert state["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000)


async def test_mqtt_asleep_vehicle_woken_and_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator(wake_seconds=0.5)
    vehicle = sim.fleet[sim.fleet.ids[2]]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=1.0) as (h, _):
        await polled(h, vehicle.id)
        vehicle.asleep = True
        final = await h.set(vehicle.id, {"lock": "UNLOCKED", "expires_in": 20})
        events = h.events(vehicle.id, "command")
    assert final["status"] == "succeeded", final
    statuses = [c.status for c in sim.calls if c.vehicle_id == vehicle.id and c.method == "POST"]
    assert statuses[0] == 409 and statuses[-1] == 200
    assert any("VEHICLE_ASLEEP" in str(e) for e in events)


async def test_mqtt_rate_limit_no_call_before_retry_after(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[0]]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=1.0) as (h, _):
        await polled(h, vehicle.id)
        sim.fleet.inject(vehicle.id, "RATE_LIMIT")  # Retry-After: 1
        started = len(sim.calls)
        final = await h.set(vehicle.id, {"lock": "UNLOCKED", "expires_in": 20})
    assert final["status"] == "succeeded", final
    calls = [c for c in sim.calls[started:] if c.vehicle_id == vehicle.id]
    assert calls[0].status == 429 and calls[0].method == "POST"
    assert calls[1].at - calls[0].at >= 1.0
    assert (calls[1].method, calls[1].status) == ("POST", 200)


async def test_mqtt_refused_token_offline_with_auth_event(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle_id = sim.fleet.ids[0]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=1.0) as (h, _):
        await h.wait_retained(vehicle_id, "state", lambda s: s.get("online") is True)
        sim.oauth.revoke(sim.fleet.users[0])
        sim.oauth.expire_access_tokens()
        answer = await h.request(vehicle_id, "get_security")
        state = await h.wait_retained(vehicle_id, "state", lambda s: s.get("online") is False)
        events = await h.wait_for(lambda: h.events(vehicle_id, "auth"))
    assert answer["status"] == "failed"
    assert answer["error"]["code"] == "AUTH_FAILED"
    assert state["online"] is False
    assert events[0]["data"] == {"code": "AUTH_FAILED", "message": "reconnect with locktwin smartcar connect"}


async def test_mqtt_refresh_survives_kill_between_token_and_next_call(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[0]]
    data_dir = tmp_path / "smartcar"
    async with serve_simulator(sim) as served:
        user_id, _ = await link_account(make_settings(served.url), data_dir=data_dir, code=sim.issue_code())
        process = await anyio.run_process(
            [sys.executable, "-m", "bridges.smartcar.tests.kill_after_refresh", str(data_dir), served.url, user_id],
            cwd=ROOT,
            check=False,
        )
        assert process.returncode == -signal.SIGKILL
        assert sim.oauth.refresh_count == 1
        # the next process: its first call uses the stored tokens; the rotated-out token is dead
        store = TokenStore(directory=data_dir)
        store.open()
        store.db.execute("UPDATE accounts SET access_expires_at = 0")  # force a refresh with the stored token
        store.close()
        settings = make_settings(served.url, poll_interval=1.0)
        async with BridgeHarness(
            adapter=SmartcarAdapter(settings=settings), broker_url=mqtt_broker, data_dir=tmp_path
        ) as h:
            state = await h.wait_retained(vehicle.id, "state", lambda s: s.get("battery") is not None)
            final = await h.set(vehicle.id, {"lock": "UNLOCKED", "expires_in": 20})
    assert state["online"] is True, state
    assert final["status"] == "succeeded", final
    assert sim.oauth.refresh_count == 2
    assert [c.status for c in sim.calls if c.path == "/oauth/token"] == [200, 200, 200]


async def test_mqtt_jammed_bolt_not_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[1]]
    vehicle.jammed = True
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=300.0) as (h, _):
        final = await h.set(vehicle.id, {"lock": "UNLOCKED", "expires_in": 3})
        state = await h.wait_retained(vehicle.id, "state", lambda s: s["lock"] != "UNLOCKING")
    assert final["status"] in {"failed", "expired"}, final
    assert state["lock"] == "LOCKED"
    reads = [c for c in sim.calls if c.vehicle_id == vehicle.id and c.method == "GET" and c.path.endswith("/security")]
    assert len(reads) >= 2  # confirmation reads of /security only, past the telemetry budget


async def test_mqtt_get_within_budget_answers_rate_limited(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle = sim.fleet[sim.fleet.ids[0]]
    async with bridge(sim, mqtt_broker, tmp_path, poll_interval=1.0) as (h, _):
        state = await polled(h, vehicle.id)
        calls = len([c for c in sim.calls if c.vehicle_id == vehicle.id])
        answer = await h.get(vehicle.id)
        after = len([c for c in sim.calls if c.vehicle_id == vehicle.id])
    assert state["odometer_m"] == pytest.approx(vehicle.odometer_km * 1000)
    assert answer["status"] == "failed"
    assert answer["error"]["code"] == "RATE_LIMITED"
    assert 0 < answer["error"]["retry_after"] <= 60
    assert after == calls


async def test_mqtt_refused_account_at_start_goes_offline(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator()
    vehicle_id = sim.fleet.ids[0]
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url, poll_interval=1.0)
        user_id, _ = await link_account(settings, data_dir=tmp_path / "smartcar", code=sim.issue_code())
        async with BridgeHarness(
            adapter=SmartcarAdapter(settings=settings), broker_url=mqtt_broker, data_dir=tmp_path
        ) as h:
            await polled(h, vehicle_id)
        # Smartcar refuses the account while the bridge is down; the next start lists the known vehicles
        sim.oauth.revoke(user_id)
        sim.oauth.expire_access_tokens()
        async with BridgeHarness(
            adapter=SmartcarAdapter(settings=settings), broker_url=mqtt_broker, data_dir=tmp_path
        ) as h:
            state = await h.wait_retained(vehicle_id, "state", lambda s: s.get("online") is False)
            events = await h.wait_for(lambda: h.events(vehicle_id, "auth"))
    assert state["odometer_m"] == pytest.approx(sim.fleet[vehicle_id].odometer_km * 1000)
    assert events[0]["data"]["code"] == "AUTH_FAILED"
