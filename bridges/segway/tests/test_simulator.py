"""The simulated cloud on its own: tokens, physics, pushes, the public surface."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

import bridges.segway
import bridges.segway.simulator
from bridges.segway import SegwayAdapter, SegwaySettings, create_push_app
from bridges.segway.client import PATHS
from bridges.segway.simulator import SegwaySimulator, Vehicle
from contracts.messages import LockState
from twin.asgi import serve_asgi
from twin.testing_fakes import RecordingSink

from .conftest import CLIENT_ID, DEVICES, SECRET, eventually, make_settings

BIKE = DEVICES[0]


def test_public_surface_pinned() -> None:
    assert sorted(bridges.segway.__all__) == ["SegwayAdapter", "SegwayClient", "SegwaySettings", "create_push_app"]
    assert sorted(bridges.segway.simulator.__all__) == [
        "Call",
        "DEMO_CLIENT_SECRET",
        "Fleet",
        "PushRecord",
        "SegwaySimulator",
        "Vehicle",
        "sign_push",
    ]


def test_simulator_token_overlap_then_expiry() -> None:
    sim = SegwaySimulator(devices=1, token_lifetime=10.0, token_overlap=0.2)
    old, lifetime = sim.issue_token()
    assert lifetime == 10
    new, _ = sim.issue_token()
    assert sim.bearer_valid(f"bearer {old}") and sim.bearer_valid(f"Bearer {new}")
    time.sleep(0.25)
    assert not sim.bearer_valid(f"bearer {old}")
    assert sim.bearer_valid(f"bearer {new}")
    assert not sim.bearer_valid(f"basic {new}")
    assert not sim.bearer_valid(None)


def test_simulator_riding_vehicle_moves() -> None:
    vehicle = Vehicle(iot_code="1", bolt_seconds=0.0)
    start = (vehicle.latitude, vehicle.longitude, vehicle.odometer, vehicle.battery)
    vehicle.ride(speed=36.0)  # 10 m/s
    assert vehicle.locked is False
    time.sleep(0.2)
    vehicle.settle()
    assert vehicle.odometer > start[2]
    assert (vehicle.latitude, vehicle.longitude) != start[:2]
    assert vehicle.battery < start[3]
    assert vehicle.status()["remainderRange"] == vehicle.remaining_range
    vehicle.park()
    assert vehicle.speed == 0


def test_simulator_bolt_takes_configured_time() -> None:
    vehicle = Vehicle(iot_code="1", bolt_seconds=0.3)
    vehicle.command_lock(False)
    vehicle.settle()
    assert vehicle.locked is True and vehicle.bolt_moving
    time.sleep(0.35)
    vehicle.settle()
    assert vehicle.locked is False and not vehicle.bolt_moving


@pytest.fixture
async def intake(sink: RecordingSink) -> AsyncIterator[str]:
    async with serve_asgi(create_push_app(sink, make_settings("http://127.0.0.1:9"))) as served:
        yield served.url


@pytest.mark.anyio
async def test_simulator_pushes_lock_changes_and_riding(intake: str, sink: RecordingSink) -> None:
    sim = SegwaySimulator(
        client_id=CLIENT_ID,
        client_secret=SECRET,
        devices=DEVICES,
        bolt_seconds=0.05,
        tick=0.02,
        status_push_interval=0.1,
        location_push_interval=0.1,
        webhook_url=intake,
    )
    async with sim.serve() as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            token = (
                await http.post(
                    PATHS["token"],
                    data={"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "client_credentials"},
                )
            ).json()["access_token"]
            answer = await http.post(
                PATHS["unlock"], json={"iotCode": BIKE}, headers={"Authorization": f"bearer {token}"}
            )
            assert answer.json()["code"] == 0

        async def unlocked() -> bool:
            return sink.state.get(BIKE, {}).get("lock") == LockState.UNLOCKED

        await eventually(unlocked)
        sim.fleet[BIKE].ride()

        async def moving() -> bool:
            return sum(1 for d, p, _ in sink.reports if d == BIKE and "latitude" in p.values) >= 2

        await eventually(moving)
        await anyio.sleep(0.3)
    paths = [p.path for p in sim.pushes if p.fields["iotCode"] == BIKE]
    assert "/v2/vehicle/status" in paths and "/v2/vehicle/location" in paths
    assert [p.attempts for p in sim.pushes if p.attempts and not p.delivered] == []  # none refused
    # riding: status pushed on its interval, not on every tick
    assert paths.count("/v2/vehicle/status") < 20


@pytest.mark.anyio
async def test_simulator_push_retried_once_when_receiver_down() -> None:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, push_retry_delay=0.05)
    sim.webhook_url = "http://127.0.0.1:9"
    record = await sim.push_alert(BIKE, 12)
    assert record.attempts == [0, 0]
    assert not record.delivered


def test_adapter_class_attributes() -> None:
    assert SegwayAdapter.vendor == "segway"
    assert SegwayAdapter.settings_model is SegwaySettings


def test_simulator_main_serves(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    command = [sys.executable, "-m", "bridges.segway.simulator", "--port", "0", "--devices", "2"]
    command += ["--client-secret-file", str(secret_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3])
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.split(" on ")[1].split(" ")[0]
        answer = httpx.post(
            url + PATHS["token"],
            data={"client_id": "E20081", "client_secret": SECRET, "grant_type": "client_credentials"},
        )
        assert answer.status_code == 200
        assert answer.json()["token_type"] == "bearer"
        assert SECRET not in first + process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
