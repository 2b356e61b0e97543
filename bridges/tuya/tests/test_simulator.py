"""The simulator as the real cloud behaves: envelope, signature checks, tokens, tickets, physics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from bridges.tuya.client import TuyaClient
from bridges.tuya.signing import sign
from bridges.tuya.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TuyaSimulator
from twin.asgi import ServedApp
from twin.testing import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def http(served: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url) as http:
        yield http


async def signed(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    token: str = "",
    secret: str = DEFAULT_CLIENT_SECRET,
    t: str | None = None,
    nonce: str = "",
    client_id: str = DEFAULT_CLIENT_ID,
    tamper_body: bytes | None = None,
) -> dict[str, Any]:
    content = json.dumps(body).encode() if body else None
    t = t or str(int(time.time() * 1000))
    headers = {
        "client_id": client_id,
        "t": t,
        "sign_method": "HMAC-SHA256",
        "access_token": token,
        "sign": sign(
            client_id=client_id,
            secret=secret,
            t=t,
            method=method,
            path=path,
            params=params,
            body=content,
            access_token=token,
            nonce=nonce,
        ),
    }
    if nonce:
        headers["nonce"] = nonce
    response = await http.request(method, path, params=params, content=tamper_body or content, headers=headers)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


async def token(http: httpx.AsyncClient) -> dict[str, Any]:
    doc = await signed(http, "GET", "/v1.0/token", params={"grant_type": 1})
    assert doc["success"] is True
    result: dict[str, Any] = doc["result"]
    return result


@pytest.mark.anyio
async def test_simulator_envelope_success_and_failure(http: httpx.AsyncClient) -> None:
    ok = await signed(http, "GET", "/v1.0/token", params={"grant_type": 1})
    assert set(ok) == {"success", "result", "t", "tid"}
    assert len(str(ok["t"])) == 13
    assert set(ok["result"]) == {"uid", "access_token", "refresh_token", "expire_time"}
    assert ok["result"]["expire_time"] == 7200
    failed = await signed(http, "GET", "/v1.0/token", params={"grant_type": 2})
    assert set(failed) == {"success", "code", "msg", "t", "tid"}
    assert (failed["success"], failed["code"]) == (False, 1003)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"secret": "wrong"}, 1004),
        ({"client_id": "someone-else"}, 1005),
        ({"t": "1600000000000"}, 1013),
        ({"t": "soon"}, 1013),
    ],
)
@pytest.mark.anyio
async def test_simulator_refuses_bad_signature(http: httpx.AsyncClient, change: dict[str, Any], code: int) -> None:
    doc = await signed(http, "GET", "/v1.0/token", params={"grant_type": 1}, **change)
    assert (doc["success"], doc["code"]) == (False, code)


@pytest.mark.anyio
async def test_simulator_signature_covers_raw_body(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    access = (await token(http))["access_token"]
    path = f"/v1.0/devices/{sim.device_ids[0]}/user"
    body = {"nick_name": "Ann", "sex": 1}
    tampered = json.dumps({"nick_name": "Eve", "sex": 1}).encode()
    doc = await signed(http, "POST", path, body=body, token=access, tamper_body=tampered)
    assert doc["code"] == 1004
    spaced = await signed(http, "POST", path, body=body, token=access)
    assert spaced["success"] is True


@pytest.mark.anyio
async def test_simulator_signature_covers_sorted_query(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    access = (await token(http))["access_token"]
    path = f"/v1.1/devices/{sim.device_ids[0]}/users"
    params = {"role": "", "keyword": "a b,c", "page_size": 5, "page_no": 1}
    assert (await signed(http, "GET", path, params=params, token=access))["success"] is True
    assert (await signed(http, "GET", path, params=params, token=access, nonce="n-1"))["success"] is True


@pytest.mark.anyio
async def test_simulator_token_missing_or_unknown(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    path = f"/v1.0/devices/{sim.device_ids[0]}/status"
    assert (await signed(http, "GET", path))["code"] == 1011
    assert (await signed(http, "GET", path, token="f" * 32))["code"] == 1011


@pytest.mark.anyio
async def test_simulator_refresh_token_works_once(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    first = await token(http)
    refreshed = await signed(http, "GET", f"/v1.0/token/{first['refresh_token']}")
    assert refreshed["success"] is True
    again = await signed(http, "GET", f"/v1.0/token/{first['refresh_token']}")
    assert (again["success"], again["code"]) == (False, 1012)
    path = f"/v1.0/devices/{sim.device_ids[0]}/status"
    assert (await signed(http, "GET", path, token=first["access_token"]))["code"] == 1011
    assert (await signed(http, "GET", path, token=refreshed["result"]["access_token"]))["success"] is True


@pytest.mark.anyio
async def test_simulator_token_expires(http: httpx.AsyncClient, sim: TuyaSimulator) -> None:
    access = (await token(http))["access_token"]
    sim.tokens.expire_all()
    doc = await signed(http, "GET", f"/v1.0/devices/{sim.device_ids[0]}/status", token=access)
    assert (doc["code"], doc["msg"]) == (1010, "token invalid")


@pytest.mark.anyio
async def test_simulator_ticket_single_use_and_device_bound(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    access = (await token(http))["access_token"]
    one, two = sim.device_ids
    ticket = await signed(http, "POST", f"/v1.0/smart-lock/devices/{one}/password-ticket", token=access)
    ticket_id = ticket["result"]["ticket_id"]
    wrong = await signed(
        http,
        "POST",
        f"/v1.0/smart-lock/devices/{two}/password-free/door-operate",
        body={"ticket_id": ticket_id, "open": True},
        token=access,
    )
    assert wrong["code"] == 1109
    ticket = await signed(http, "POST", f"/v1.0/smart-lock/devices/{one}/password-ticket", token=access)
    operate = f"/v1.0/smart-lock/devices/{one}/password-free/door-operate"
    body = {"ticket_id": ticket["result"]["ticket_id"], "open": "true"}  # some clients send a string
    assert (await signed(http, "POST", operate, body=body, token=access))["result"] is True
    assert (await signed(http, "POST", operate, body=body, token=access))["code"] == 1109


@pytest.mark.anyio
async def test_simulator_bolt_takes_time(sim: TuyaSimulator, http: httpx.AsyncClient) -> None:
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    lock.bolt_seconds = 0.2
    lock.operate(lock=False)
    assert lock.moving and lock.locked
    await anyio.sleep(0.25)
    await sim.advance()
    assert not lock.moving and not lock.locked
    assert lock.open_logs[-1]["status"]["code"] == "unlock_app"


@pytest.mark.anyio
async def test_simulator_unknown_device_permission_denied(http: httpx.AsyncClient) -> None:
    access = (await token(http))["access_token"]
    doc = await signed(http, "GET", "/v1.0/devices/not-ours/status", token=access)
    assert doc["code"] == 1106


@pytest.mark.anyio
async def test_simulator_remote_unlock_disabled(sim: TuyaSimulator, served: ServedApp, adapter: Any) -> None:
    from contracts.errors import ErrorCode
    from twin.adapter import VendorError
    from twin.testing_fakes import command_context

    device = sim.device_ids[0]
    sim.fleet[device].remote_unlock_without_pwd = False
    with pytest.raises(VendorError) as caught:
        await adapter.lock(device, locked=False, ctx=command_context(device))
    assert caught.value.info.code == ErrorCode.UNSUPPORTED
    assert not any(c.path.endswith("door-operate") for c in sim.calls)


@pytest.mark.anyio
async def test_simulator_slow_device_is_device_timeout(sim: TuyaSimulator, served: ServedApp) -> None:
    from contracts.errors import ErrorCode
    from twin.adapter import VendorError

    device = sim.device_ids[0]
    sim.fleet[device].latency = 1.0
    async with TuyaClient(
        base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET), timeout=0.2
    ) as client:
        ticket = await client.post(f"/v1.0/smart-lock/devices/{device}/password-ticket")
        with pytest.raises(VendorError) as caught:
            await client.post(
                f"/v1.0/smart-lock/devices/{device}/password-free/door-operate",
                {"ticket_id": ticket["ticket_id"], "open": True},
            )
    assert caught.value.info.code == ErrorCode.DEVICE_TIMEOUT
    assert caught.value.info.retryable


def test_simulator_main_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridges.tuya.simulator", "--port", str(port), "--devices", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        t = str(int(time.time() * 1000))
        headers = {
            "client_id": DEFAULT_CLIENT_ID,
            "t": t,
            "sign_method": "HMAC-SHA256",
            "sign": sign(
                client_id=DEFAULT_CLIENT_ID,
                secret=DEFAULT_CLIENT_SECRET,
                t=t,
                method="GET",
                path="/v1.0/token",
                params={"grant_type": 1},
            ),
        }
        doc = httpx.get(f"http://127.0.0.1:{port}/v1.0/token", params={"grant_type": 1}, headers=headers).json()
        assert doc["success"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)
