"""Conformance against Smartcar's own code: the official Python SDK parses every simulator answer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from bridges.smartcar.simulator import DEFAULT_REDIRECT_URI, SmartcarSimulator, serve_simulator

from .conftest import CLIENT_ID, CLIENT_SECRET, make_simulator

pytest.importorskip("smartcar")

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).with_name("sdk_conformance.py")


async def run_sdk(sim: SmartcarSimulator, url: str) -> dict[str, object]:
    env = {
        **os.environ,
        "SMARTCAR_API_ORIGIN": url,
        "SMARTCAR_AUTH_ORIGIN": f"{url}/oauth/token",
        "PYTHONWARNINGS": "ignore",
    }
    code = sim.issue_code()
    process = await anyio.run_process(
        [sys.executable, str(SCRIPT), CLIENT_ID, CLIENT_SECRET, DEFAULT_REDIRECT_URI, code], env=env, check=False
    )
    assert process.returncode == 0, process.stderr.decode()[-2000:]
    result: dict[str, object] = json.loads(process.stdout)
    return result


async def test_sdk_conformance_parses_every_answer() -> None:
    sim = make_simulator(devices=4, bolt_seconds=0.0)
    first, second, third, _ = sim.fleet.ids
    sim.fleet[second].riding = True
    sim.fleet.inject(third, "RATE_LIMIT")
    async with serve_simulator(sim) as served:
        out = await run_sdk(sim, served.url)
    assert out["token_type"] == "Bearer"
    assert out["expires_in"] == 7200
    assert out["vehicles"] == sim.fleet.ids
    assert out["paging"] == {"count": 4, "offset": 0, "first_page": sim.fleet.ids[:2]}
    assert out["user"] == sim.fleet.users[0]
    vehicle = sim.fleet[first]
    assert out["attributes"] == {"id": first, "make": vehicle.make, "model": vehicle.model, "year": vehicle.year}
    assert out["unlock"]["status"] == "success"  # type: ignore[index]
    assert out["unlock"]["request_id"]  # type: ignore[index]
    status = out["lock_status_after_unlock"]
    assert isinstance(status, dict)
    assert status["is_locked"] is False
    assert {"type": "frontLeft", "status": "CLOSED"} in status["doors"]
    assert status["charging_port"] == [{"type": "chargingPort", "status": "CLOSED"}]
    assert status["data_age"] and status["unit_system"] == "metric"
    assert out["lock"] == {"status": "success", "message": "Successfully sent request to vehicle"}
    assert out["lock_status_after_lock"] is True
    assert out["battery"] == {"percent_remaining": vehicle.percent_remaining, "range": vehicle.range_km}
    assert out["location"] == {"latitude": vehicle.latitude, "longitude": vehicle.longitude}
    assert out["odometer"] == vehicle.odometer_km
    assert out["refreshed"] is True
    errors = out["errors"]
    assert isinstance(errors, dict)
    motion = errors["in_motion"]
    assert (motion["status_code"], motion["type"], motion["code"]) == (409, "VEHICLE_STATE", "IN_MOTION")
    assert motion["message"] == "VEHICLE_STATE:IN_MOTION - The vehicle is in motion."
    assert motion["resolution"] == {"type": "RETRY_LATER", "url": None}
    assert motion["request_id"] and motion["doc_url"]
    limit = errors["rate_limit"]
    assert (limit["status_code"], limit["type"], limit["code"], limit["retry_after"]) == (
        429,
        "RATE_LIMIT",
        "VEHICLE",
        "1",
    )
    auth = errors["authentication"]
    assert (auth["status_code"], auth["type"]) == (401, "AUTHENTICATION")
    for name in ("reused_refresh_token", "bad_code"):
        oauth = errors[name]
        assert (oauth["status_code"], oauth["type"]) == (400, "invalid_grant"), name
        assert oauth["message"]
    missing = errors["unknown_vehicle"]
    assert (missing["status_code"], missing["type"]) == (404, "RESOURCE_NOT_FOUND")
