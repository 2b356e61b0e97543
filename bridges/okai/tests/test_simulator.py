from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridges.okai.client import PATHS
from bridges.okai.models import OkaiCode
from bridges.okai.signing import sign
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from bridges.okai.tests.helpers import SIGN_KEY, USER_KEY
from twin.testing import free_port

ROOT = Path(__file__).resolve().parents[3]


def _sim(**kwargs: object) -> OkaiSimulator:
    return OkaiSimulator(user_key=USER_KEY, devices=1, bolt_seconds=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_simulator_unsigned_ignores_placeholder_timestamp() -> None:
    # public client code sends timestamp=000&sign=000 to an account without signing
    sim = _sim()
    imei = sim.fleet.imeis[0]
    async with serve_simulator(sim) as base, httpx.AsyncClient(base_url=base) as http:
        answer = (
            await http.get(
                PATHS["status"], params={"userKey": USER_KEY, "timestamp": "000", "sign": "000", "imei": imei}
            )
        ).json()
    assert answer["code"] == OkaiCode.SUCCESS
    assert answer["msg"] == "success"
    assert answer["data"]["imei"] == imei and answer["data"]["lockStatus"] == 1


@pytest.mark.anyio
async def test_simulator_timestamp_check_always_rejects_stale() -> None:
    sim = _sim(timestamp_check="always", max_skew=30.0)
    async with serve_simulator(sim) as base, httpx.AsyncClient(base_url=base) as http:
        stale = str(int((time.time() - 120) * 1000))
        answer = (await http.get(PATHS["status"], params={"userKey": USER_KEY, "timestamp": stale, "imei": "1"})).json()
    assert answer["code"] == OkaiCode.TIMESTAMP_EXPIRED


@pytest.mark.anyio
async def test_simulator_signed_headers_accepted_with_document_recipe() -> None:
    sim = _sim(sign_key=SIGN_KEY, sign_params="business")
    imei = sim.fleet.imeis[0]
    body = {"imei": imei, "operate": "unlock", "expireTime": 5}
    headers = {"userKey": USER_KEY, "timestamp": str(int(time.time())), "sign": sign(body, SIGN_KEY, "business")}
    async with serve_simulator(sim) as base, httpx.AsyncClient(base_url=base) as http:
        answer = (await http.post(PATHS["switch_lock"], json=body, headers=headers)).json()
        tampered = (await http.post(PATHS["switch_lock"], json={**body, "operate": "lock"}, headers=headers)).json()
    assert answer == {"code": 200, "msg": "success", "data": None}
    assert tampered["code"] == OkaiCode.SIGN_ERROR
    assert [c.code for c in sim.calls] == [OkaiCode.SUCCESS, OkaiCode.SIGN_ERROR]
    assert sim.calls[0].auth_in == "headers"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"imei": "X", "operate": "open", "expireTime": 5}', b'{"operate": "lock"}'],
)
async def test_simulator_bad_switch_lock_param_error(body: bytes) -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    body = body.replace(b'"X"', f'"{imei}"'.encode())
    async with serve_simulator(sim) as base, httpx.AsyncClient(base_url=base) as http:
        answer = (await http.post(PATHS["switch_lock"], content=body, headers={"userKey": USER_KEY})).json()
    assert answer["code"] == OkaiCode.PARAM_ERROR


@pytest.mark.anyio
async def test_simulator_unknown_path_not_an_envelope() -> None:
    sim = _sim()
    async with serve_simulator(sim) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/scooter/query/nothing")
    assert response.status_code == 404


def test_simulator_command_waits_for_offline_scooter_then_dropped() -> None:
    sim = OkaiSimulator(user_key=USER_KEY, devices=1, bolt_seconds=0.0, delivery_seconds=0.0)
    scooter = sim.fleet[sim.fleet.imeis[0]]
    scooter.set_online(False)
    now = time.monotonic()
    late = scooter.accept("unlock", 1, now)
    timely = scooter.accept("unlock", 5, now)
    scooter.advance(now + 2)  # still offline: nothing reaches it
    assert (late.outcome, timely.outcome) == ("pending", "pending")
    scooter.set_online(True, at=now + 2)  # back after the first deadline, before the second
    scooter.advance(now + 2.01)
    assert (late.outcome, timely.outcome) == ("dropped", "applied")
    assert scooter.locked is False


def test_simulator_main_serves_over_http() -> None:
    port = free_port()
    env = {**os.environ, "OKAI_SIM_USER_KEY": USER_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridges.okai.simulator", "--port", str(port), "--devices", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/shareos-device" in first
        assert USER_KEY not in first
        scooters = proc.stdout.readline().split()[1:]
        assert len(scooters) == 2
        answer = httpx.get(
            f"http://127.0.0.1:{port}/shareos-device{PATHS['status']}",
            params={"imei": scooters[1]},
            headers={"userKey": USER_KEY, "timestamp": "0"},
        ).json()
        assert answer["code"] == OkaiCode.SUCCESS
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
