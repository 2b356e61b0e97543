"""The HTTP client against the simulator over real HTTP: tokens, refresh, retries, error mapping."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from bridges.tuya.client import TuyaClient
from bridges.tuya.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TuyaSimulator, serve_simulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.asgi import ServedApp
from twin.testing_fakes import FakeClock


def _client(served: ServedApp, **options: Any) -> TuyaClient:
    return TuyaClient(
        base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET), **options
    )


def _status_path(sim: TuyaSimulator) -> str:
    return f"/v1.0/devices/{sim.device_ids[0]}/status"


@pytest.mark.anyio
async def test_request_grants_token_then_reuses_it(sim: TuyaSimulator, client: TuyaClient) -> None:
    for _ in range(3):
        result = await client.get(_status_path(sim))
        assert {item["code"] for item in result} >= {"lock_motor_state", "residual_electricity"}
    assert [c.path for c in sim.calls].count("/v1.0/token") == 1
    assert client.grants == 1
    assert client.refreshes == 0


@pytest.mark.anyio
async def test_request_with_nonce_accepted(sim: TuyaSimulator, served: ServedApp) -> None:
    async with TuyaClient(
        base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET), send_nonce=True
    ) as client:
        await client.get(_status_path(sim))
    assert all("nonce" in call.headers for call in sim.calls)


@pytest.mark.anyio
async def test_token_refreshed_before_expiry_with_one_time_refresh_token() -> None:
    sim = TuyaSimulator(devices=1, token_lifetime=1000.0)
    clock = FakeClock()
    async with serve_simulator(sim) as served, _client(served, clock=clock) as client:
        await client.get(_status_path(sim))
        first_refresh_token = next(iter(sim.tokens.refresh))
        clock.advance(939.0)  # before the refresh point (the default margin: 60 s before expiry)
        await client.get(_status_path(sim))
        assert client.refreshes == 0
        clock.advance(2.0)  # past it, before expiry
        await client.get(_status_path(sim))
        clock.advance(941.0)
        await client.get(_status_path(sim))
    assert client.refreshes == 2
    assert client.grants == 1
    assert first_refresh_token not in sim.tokens.refresh  # used once, gone
    refused = [c for c in sim.calls if c.path == _status_path(sim)]
    assert len(refused) == 4  # no call was refused for an expired token


@pytest.mark.anyio
async def test_token_expired_answer_refreshes_once_and_retries(sim: TuyaSimulator, client: TuyaClient) -> None:
    await client.get(_status_path(sim))
    sim.tokens.expire_all()
    await client.get(_status_path(sim))
    assert client.refreshes == 1
    paths = [c.path for c in sim.calls]
    assert paths.count(_status_path(sim)) == 3  # the refused call and its one retry
    assert sum(p.startswith("/v1.0/token/") for p in paths) == 1


@pytest.mark.anyio
async def test_token_refresh_concurrent_callers_refresh_once(sim: TuyaSimulator, client: TuyaClient) -> None:
    await client.get(_status_path(sim))
    sim.tokens.expire_all()
    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(client.get, _status_path(sim))
    assert client.refreshes == 1
    assert sim.tokens.refreshes == 1


@pytest.mark.anyio
async def test_token_used_refresh_token_falls_back_to_grant(sim: TuyaSimulator, client: TuyaClient) -> None:
    await client.get(_status_path(sim))
    sim.tokens.refresh.clear()  # as if the refresh token had been used elsewhere
    sim.tokens.expire_all()
    await client.get(_status_path(sim))
    assert client.grants == 2
    assert client.refreshes == 0


@pytest.mark.anyio
async def test_token_invalid_twice_is_auth_failed(sim: TuyaSimulator, client: TuyaClient) -> None:
    sim.inject(1011, count=2, path_contains="/status")
    with pytest.raises(VendorError) as caught:
        await client.get(_status_path(sim))
    assert caught.value.info.code == ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_code == "1011"


@pytest.mark.anyio
async def test_request_wrong_secret_is_auth_failed(sim: TuyaSimulator, served: ServedApp) -> None:
    async with TuyaClient(base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr("wrong")) as client:
        with pytest.raises(VendorError) as caught:
            await client.get(_status_path(sim))
    assert caught.value.info.code == ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_code == "1004"
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize(
    ("vendor_code", "expected", "retryable"),
    [
        (2001, ErrorCode.DEVICE_OFFLINE, True),
        (1106, ErrorCode.PERMISSION_DENIED, False),
        (28841105, ErrorCode.PERMISSION_DENIED, False),
        (1004, ErrorCode.AUTH_FAILED, False),
        (1110, ErrorCode.RATE_LIMITED, True),
        (1111, ErrorCode.RATE_LIMITED, True),
        (1199, ErrorCode.RATE_LIMITED, True),
        (500, ErrorCode.VENDOR_UNAVAILABLE, True),
        (1101, ErrorCode.INVALID_PAYLOAD, False),
        (2008, ErrorCode.UNSUPPORTED, False),
        (987654, ErrorCode.VENDOR_ERROR, False),
    ],
)
@pytest.mark.anyio
async def test_request_error_code_mapped(
    sim: TuyaSimulator, client: TuyaClient, vendor_code: int, expected: ErrorCode, retryable: bool
) -> None:
    sim.inject(vendor_code, path_contains="/status")
    with pytest.raises(VendorError) as caught:
        await client.get(_status_path(sim))
    assert caught.value.info.code == expected
    assert caught.value.info.retryable is retryable
    assert caught.value.info.vendor_code == str(vendor_code)


@pytest.mark.anyio
async def test_request_rate_limit_of_the_cloud() -> None:
    sim = TuyaSimulator(devices=1, max_requests_per_second=3)
    async with serve_simulator(sim) as served, _client(served) as client:
        with pytest.raises(VendorError) as caught:
            for _ in range(5):
                await client.get(_status_path(sim))
    assert caught.value.info.code == ErrorCode.RATE_LIMITED
    assert caught.value.info.vendor_code == "1110"


@pytest.mark.anyio
async def test_request_unreachable_is_vendor_unavailable() -> None:
    async with TuyaClient(
        base_url="http://127.0.0.1:9", client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET)
    ) as client:
        with pytest.raises(VendorError) as caught:
            await client.get("/v1.0/devices/x/status")
    assert caught.value.info.code == ErrorCode.VENDOR_UNAVAILABLE
    assert caught.value.info.retryable


@pytest.mark.anyio
async def test_request_unknown_path_is_unsupported(client: TuyaClient) -> None:
    with pytest.raises(VendorError) as caught:
        await client.get("/v9.9/nothing")
    assert caught.value.info.code == ErrorCode.UNSUPPORTED


@pytest.mark.anyio
async def test_client_takes_its_transport_from_the_caller(sim: TuyaSimulator) -> None:
    # the simulator in-process: the transport given is the one the client sends through
    transport = httpx.ASGITransport(app=sim.app)
    secret = SecretStr(DEFAULT_CLIENT_SECRET)
    async with TuyaClient(
        base_url="http://tuya.test", client_id=DEFAULT_CLIENT_ID, secret=secret, transport=transport
    ) as client:
        await client.get(_status_path(sim))
    assert [c.path for c in sim.calls] == ["/v1.0/token", _status_path(sim)]
