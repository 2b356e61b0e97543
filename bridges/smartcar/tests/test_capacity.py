"""Capacity (issue 19) against the Smartcar simulator over real HTTP: a vehicle whose plan's calls of the
month are spent (430 BILLING:VEHICLE_REQUEST_LIMIT) has its commands end ``QUOTA_EXHAUSTED`` with no
further call to it, while the other vehicles go on; the application's 429 is Smartcar's own body."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.cli import link_account
from bridges.smartcar.client import error_from_response
from bridges.smartcar.simulator import serve_simulator
from contracts.errors import ErrorCode
from twin.simlimits import LimitProfile, Rate
from twin.testing import BridgeHarness

from .conftest import make_settings, make_simulator

pytestmark = pytest.mark.anyio


async def test_one_vehicles_spent_plan_stops_that_vehicle_only(mqtt_broker: str, tmp_path: Path) -> None:
    sim = make_simulator(devices=2, bolt_seconds=0.0)
    spent, other = sim.fleet.ids
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url, poll_interval=600.0)
        await link_account(settings, data_dir=tmp_path / "smartcar", code=sim.issue_code())
        async with BridgeHarness(
            adapter=SmartcarAdapter(settings=settings), broker_url=mqtt_broker, data_dir=tmp_path
        ) as h:
            sim.limits.configure(LimitProfile(), vehicle_quota=LimitProfile(quota=6, quota_period=30 * 86400.0))
            outcomes = []
            for n in range(6):
                outcomes.append(await h.set(spent, {"lock": "UNLOCKED" if n % 2 else "LOCKED", "expires_in": 20}))
                if outcomes[-1]["status"] != "succeeded":
                    break
            refused = outcomes[-1]
            assert refused["status"] == "failed", outcomes
            assert refused["error"]["code"] in ("QUOTA_EXHAUSTED", "NOT_CONFIRMED"), refused
            assert "VEHICLE_REQUEST_LIMIT" in json.dumps(outcomes) or refused["error"]["code"] == "QUOTA_EXHAUSTED"
            quota = sim.limits.vehicles[spent]
            after = quota.after_exhaustion
            again = await h.set(spent, {"lock": "LOCKED", "expires_in": 20})
            assert again["status"] == "failed" and again["error"]["code"] == "QUOTA_EXHAUSTED"
            assert again["error"]["retry_after"] > 0
            assert quota.after_exhaustion == after  # refused by the bridge: Smartcar was not asked again
            assert (await h.set(other, {"lock": "UNLOCKED", "expires_in": 20}))["status"] == "succeeded"
            budget = await h.wait_for(
                lambda: (raw := h.retained.get(f"{h.base}/bridge/smartcar/budget")) and json.loads(raw)
            )
            assert budget["exhausted"] is None  # the account goes on


async def test_the_applications_rate_limit_is_smartcars_429(tmp_path: Path) -> None:
    sim = make_simulator(devices=1, limits=LimitProfile(rates={"*": Rate(per_second=1.0, burst=1.0)}))
    vehicle = sim.fleet.ids[0]
    async with serve_simulator(sim) as served, httpx.AsyncClient(base_url=served.url) as client:
        tokens = sim.issue_tokens()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await client.get(f"/v2.0/vehicles/{vehicle}/security", headers=headers)).status_code == 200
        answer = await client.get(f"/v2.0/vehicles/{vehicle}/security", headers=headers)
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["retry-after"] == "1"
    body = answer.json()
    assert (body["type"], body["code"], body["resolution"]["type"]) == ("RATE_LIMIT", "SMARTCAR_API", "RETRY_LATER")
    error = error_from_response(answer)
    assert error.info.code == ErrorCode.RATE_LIMITED and error.vendor_wide and error.info.retry_after == 1.0
