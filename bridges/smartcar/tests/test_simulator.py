"""The simulator speaks Smartcar's wire format: token endpoint, error bodies, physics, the demo kit."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.settings import SmartcarSettings
from bridges.smartcar.simulator import SmartcarSimulator, serve_simulator
from twin.asgi import ServedApp, serve_asgi
from twin.testing import free_port
from twin.testing_fakes import RecordingSink

from .conftest import CLIENT_ID, CLIENT_SECRET, make_simulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


async def test_simulator_token_endpoint_requires_basic_auth(served: ServedApp, sim: SmartcarSimulator) -> None:
    form = {
        "grant_type": "authorization_code",
        "code": sim.issue_code(),
        "redirect_uri": "http://127.0.0.1:8000/smartcar/callback",
    }
    async with httpx.AsyncClient(base_url=served.url) as http:
        anonymous = await http.post("/oauth/token", data=form)
        wrong = await http.post("/oauth/token", data=form, auth=(CLIENT_ID, "nope"))
        good = await http.post("/oauth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
        again = await http.post("/oauth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "invalid_client")
    assert wrong.status_code == 401
    assert good.status_code == 200
    assert set(good.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (good.json()["token_type"], good.json()["expires_in"]) == ("Bearer", 7200)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


async def test_simulator_error_body_shape(served: ServedApp, sim: SmartcarSimulator) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        unauthenticated = await http.get(f"/v2.0/vehicles/{sim.fleet.ids[0]}/security")
        nowhere = await http.get("/v2.0/nowhere")
    for reply in (unauthenticated, nowhere):
        assert reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert set(body) >= {
            "type",
            "code",
            "description",
            "docURL",
            "statusCode",
            "requestId",
            "resolution",
            "suggestedUserMessage",
        }
        assert body["statusCode"] == reply.status_code
        assert reply.headers["sc-request-id"] == body["requestId"]
    assert unauthenticated.json()["type"] == "AUTHENTICATION"
    assert unauthenticated.json()["resolution"] == {"type": "REAUTHENTICATE"}
    assert nowhere.json()["type"] == "RESOURCE_NOT_FOUND"


async def test_simulator_permission_by_scope(served: ServedApp, sim: SmartcarSimulator) -> None:
    code = sim.oauth.issue_code(sim.fleet.users[0], scope=frozenset({"read_security"}))
    async with httpx.AsyncClient(base_url=served.url) as http:
        tokens = (
            await http.post(
                "/oauth/token",
                data={"grant_type": "authorization_code", "code": code},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
        ).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        read = await http.get(f"/v2.0/vehicles/{sim.fleet.ids[0]}/security", headers=headers)
        write = await http.post(
            f"/v2.0/vehicles/{sim.fleet.ids[0]}/security", json={"action": "UNLOCK"}, headers=headers
        )
    assert read.status_code == 200
    assert (write.status_code, write.json()["type"]) == (403, "PERMISSION")
    assert sim.fleet[sim.fleet.ids[0]].locked is True


async def test_simulator_vehicles_fall_asleep() -> None:
    sim = make_simulator(sleep_after=0.2, wake_seconds=0.1)
    vehicle = sim.fleet[sim.fleet.ids[0]]
    await anyio.sleep(0.25)
    await sim.advance()
    assert vehicle.asleep
    sim.fleet.wake(vehicle, time.monotonic())
    await anyio.sleep(0.15)
    sim.fleet.advance(time.monotonic())
    assert not vehicle.asleep


async def test_simulator_bolt_takes_time() -> None:
    sim = make_simulator(bolt_seconds=0.2)
    vehicle = sim.fleet[sim.fleet.ids[0]]
    now = time.monotonic()
    sim.fleet.start_bolt(vehicle, locked=False, now=now)
    sim.fleet.advance(now + 0.1)
    assert vehicle.locked
    sim.fleet.advance(now + 0.2)
    assert not vehicle.locked
    vehicle.jammed = True
    sim.fleet.start_bolt(vehicle, locked=True, now=now)
    sim.fleet.advance(now + 1)
    assert not vehicle.locked


async def test_simulator_demo_kit_survives_restart(sink: RecordingSink) -> None:
    for _ in range(2):  # a second demo start: new simulator, same store, no new exchange needed
        kit = SmartcarAdapter.simulator(devices=2)
        async with serve_asgi(kit.app) as served:
            adapter = SmartcarAdapter(settings=SmartcarSettings(**kit.settings(served.url)))
            await adapter.start(sink)
            try:
                devices = await adapter.list_devices()
                patch = await adapter.read_status(devices[0].id)
            finally:
                await adapter.stop()
        assert [d.id for d in devices] == list(kit.device_ids)
        assert patch.values["online"] is True


async def test_simulator_main_serves(tmp_path: Path) -> None:
    port = free_port()
    async with await anyio.open_process(
        [sys.executable, "-m", "bridges.smartcar.simulator", "--port", str(port), "--devices", "2"], cwd=ROOT
    ) as process:
        try:
            assert process.stdout is not None
            banner = b""
            with anyio.fail_after(20):
                while b"AUTH_CODE" not in banner:
                    banner += await process.stdout.receive()
            async with httpx.AsyncClient() as http:
                reply = await http.get(f"http://127.0.0.1:{port}/v2.0/vehicles")
        finally:
            process.terminate()
    assert f"http://127.0.0.1:{port}".encode() in banner
    assert reply.status_code == 401


async def test_simulator_sdk_style_unit_header(served: ServedApp, sim: SmartcarSimulator) -> None:
    tokens = sim.issue_tokens()
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "sc-unit-system": "imperial"}
    async with httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.get(f"/v2.0/vehicles/{sim.fleet.ids[0]}/odometer", headers=headers)
    assert reply.headers["sc-unit-system"] == "imperial"
    assert reply.json()["distance"] == pytest.approx(sim.fleet[sim.fleet.ids[0]].odometer_km / 1.609344, abs=0.1)
    assert reply.headers["sc-data-age"].endswith("Z")


async def test_simulator_serve_helper() -> None:
    sim = make_simulator(devices=1)
    async with serve_simulator(sim) as served, httpx.AsyncClient() as http:
        reply = await http.get(
            f"{served.url}/v2.0/user", headers={"Authorization": f"Bearer {sim.issue_tokens()['access_token']}"}
        )
    assert reply.json() == {"id": sim.fleet.users[0]}
    assert sim.calls[-1].path == "/v2.0/user" and sim.calls[-1].status == 200


async def test_simulator_riding_vehicle_moves() -> None:
    sim = make_simulator(devices=1)
    vehicle = sim.fleet[sim.fleet.ids[0]]
    vehicle.riding = True
    vehicle.speed_kmh = 3600.0  # a kilometre a second keeps the test short
    odometer, latitude, battery = vehicle.odometer_km, vehicle.latitude, vehicle.percent_remaining
    start = time.monotonic()
    sim.fleet.advance(start)
    sim.fleet.advance(start + 2.0)
    assert vehicle.odometer_km == pytest.approx(odometer + 2.0, abs=0.5)
    assert vehicle.latitude > latitude
    assert vehicle.percent_remaining < battery
