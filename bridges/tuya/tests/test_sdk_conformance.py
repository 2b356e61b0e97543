"""Conformance: the official tuya-connector-python SDK, unchanged, against the simulator."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from tuya_connector import TuyaOpenAPI

from bridges.tuya.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TuyaSimulator, serve_simulator


def _sdk_session(url: str, device_id: str) -> dict[str, Any]:
    api = TuyaOpenAPI(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    answers: dict[str, Any] = {"connect": api.connect()}
    answers["status"] = api.get(f"/v1.0/devices/{device_id}/status")
    answers["users"] = api.get(
        f"/v1.1/devices/{device_id}/users", {"keyword": "", "role": "", "page_no": 1, "page_size": 10}
    )
    ticket = api.post(f"/v1.0/smart-lock/devices/{device_id}/password-ticket")
    answers["ticket"] = ticket
    answers["operate"] = api.post(
        f"/v1.0/smart-lock/devices/{device_id}/password-free/door-operate",
        {"ticket_id": ticket["result"]["ticket_id"], "open": True},
    )
    answers["add"] = api.post(f"/v1.0/devices/{device_id}/user", {"nick_name": "Zoë", "sex": 1})
    user_id = answers["add"]["result"]["user_id"]
    answers["role"] = api.put(f"/v1.0/smart-lock/devices/{device_id}/users/{user_id}/actions/role", {"role": "admin"})
    answers["delete"] = api.delete(f"/v1.0/devices/{device_id}/users/{user_id}")
    answers["empty_body"] = api.post(f"/v1.0/smart-lock/devices/{device_id}/password-ticket", {})
    return answers


@pytest.mark.anyio
async def test_official_sdk_accepted_by_simulator() -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0)
    device_id = sim.device_ids[0]
    async with serve_simulator(sim) as served:
        answers = await anyio.to_thread.run_sync(_sdk_session, served.url, device_id)
    for name, answer in answers.items():
        assert answer["success"] is True, (name, answer)
    assert answers["operate"]["result"] is True
    assert sim.fleet[device_id].locked is False
    assert {item["code"] for item in answers["status"]["result"]} >= {"lock_motor_state"}


def _sdk_refresh(url: str, device_id: str) -> list[dict[str, Any]]:
    api = TuyaOpenAPI(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    api.connect()
    # the SDK refreshes when less than a minute is left: every call here uses a fresh refresh token
    return [api.get(f"/v1.0/devices/{device_id}/status") for _ in range(3)]


@pytest.mark.anyio
async def test_official_sdk_one_time_refresh_accepted() -> None:
    sim = TuyaSimulator(devices=1, token_lifetime=30)
    async with serve_simulator(sim) as served:
        answers = await anyio.to_thread.run_sync(_sdk_refresh, served.url, sim.device_ids[0])
    assert all(answer["success"] for answer in answers)
    assert sim.tokens.refreshes == 3


def _sdk_wrong_secret(url: str) -> dict[str, Any]:
    return TuyaOpenAPI(url, DEFAULT_CLIENT_ID, "not-the-secret").connect()


@pytest.mark.anyio
async def test_official_sdk_wrong_secret_refused() -> None:
    sim = TuyaSimulator(devices=1)
    async with serve_simulator(sim) as served:
        answer = await anyio.to_thread.run_sync(_sdk_wrong_secret, served.url)
    assert answer["success"] is False
    assert answer["code"] == 1004


WIRE_CASES: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
    ("GET", "/v1.1/devices/{d}/users", {"keyword": "Ann Lee", "role": "", "page_no": 1, "page_size": 2}, None),
    (
        "GET",
        "/v1.0/smart-lock/devices/{d}/users",
        {"codes": "unlock_card,unlock_password", "page_no": 1, "page_size": 5},
        None,
    ),
    ("GET", "/v1.0/devices/{d}/door-lock/absent-users", None, None),
    ("POST", "/v1.0/devices/{d}/user", None, {"nick_name": 'Zoë "Z" Ünal', "sex": 2, "height": 170}),
    ("POST", "/v1.0/smart-lock/devices/{d}/password-ticket", None, None),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), WIRE_CASES)
@pytest.mark.anyio
async def test_client_wire_signature_equals_official_sdk(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    params: dict[str, Any] | None,
    body: dict[str, Any] | None,
) -> None:
    """What the project's client puts on the wire is what the SDK would sign for the same call."""
    from pydantic import SecretStr
    from tuya_connector import openapi
    from tuya_connector.openapi import TuyaTokenInfo

    from bridges.tuya.client import TuyaClient

    sim = TuyaSimulator(devices=1)
    path = path.format(d=sim.device_ids[0])
    async with (
        serve_simulator(sim) as served,
        TuyaClient(base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET)) as client,
    ):
        await client.request(method, path, params=params, body=body)
    [access_token] = sim.tokens.access
    for call in sim.calls:
        sdk = TuyaOpenAPI(served.url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        if not call.path.startswith("/v1.0/token"):
            sdk.token_info = TuyaTokenInfo({"t": 0, "result": {"access_token": access_token}})
            expected_params, expected_body = params, body
        else:
            expected_params, expected_body = {"grant_type": 1}, None
        stamp = int(call.headers["t"]) / 1000
        monkeypatch.setattr(openapi.time, "time", lambda stamp=stamp: stamp)
        expected, t = sdk._calculate_sign(call.method, call.path, expected_params, expected_body)
        monkeypatch.undo()
        assert str(t) == call.headers["t"]
        assert call.headers["sign"] == expected, call.path
        assert call.headers["sign_method"] == "HMAC-SHA256"
        assert call.headers["client_id"] == DEFAULT_CLIENT_ID
