"""The client against the simulator over real HTTP: token, envelope, every endpoint, every code."""

from __future__ import annotations

from functools import partial

import anyio
import httpx
import pytest

from bridges.segway.client import PATHS, SegwayClient
from bridges.segway.settings import region_base_url
from bridges.segway.simulator import SegwaySimulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.asgi import ServedApp
from twin.testing_fakes import FakeClock

from .conftest import CLIENT_ID, DEVICES, SECRET, eventually, make_settings

BIKE = DEVICES[0]


def test_region_base_url_follows_platform_code() -> None:
    assert region_base_url("A20081") == "https://apac-api.segwaydiscovery.com"
    assert region_base_url("E20081") == "https://eu-api.segwaydiscovery.com"
    assert region_base_url("u1") == "https://us-api.segwaydiscovery.com"
    assert region_base_url("C9") == "https://cn-api.segwaydiscovery.com"
    with pytest.raises(ValueError, match="platform code"):
        region_base_url("X1")


def test_settings_base_url_override_and_secret_hidden() -> None:
    settings = make_settings("http://127.0.0.1:9/")
    assert settings.api_base_url == "http://127.0.0.1:9"
    assert make_settings(None).api_base_url == "https://eu-api.segwaydiscovery.com"
    assert "e2651be5" not in repr(settings)
    assert "e2651be5" not in str(settings.model_dump())


@pytest.mark.anyio
async def test_status_reads_and_token_fetched_once(client: SegwayClient, sim: SegwaySimulator) -> None:
    status = await client.status(BIKE)
    again = await client.status(BIKE)
    assert status.iot_code == BIKE
    assert status.locked is True
    assert status.remaining_range == again.remaining_range == sim.fleet[BIKE].remaining_range
    assert len(sim.calls_to(PATHS["token"])) == 1
    token_call = sim.calls_to(PATHS["token"])[0]
    assert "client_secret" not in token_call.params
    assert token_call.params["grant_type"] == "client_credentials"


@pytest.mark.anyio
async def test_token_bad_credentials_auth_failed(served: ServedApp, sim: SegwaySimulator) -> None:
    settings = make_settings(served.url, client_secret="wrong")
    async with SegwayClient(settings=settings) as client:
        with pytest.raises(VendorError) as err:
            await client.status(BIKE)
    assert err.value.info.code == ErrorCode.AUTH_FAILED
    assert err.value.info.vendor_code == "invalid_client"
    assert err.value.info.retryable is False


@pytest.mark.anyio
async def test_token_refreshed_ahead_of_expiry() -> None:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, token_lifetime=100.0)
    clock = FakeClock()
    async with sim.serve() as served:
        settings = make_settings(served.url, token_refresh_ahead=30.0)
        async with SegwayClient(settings=settings, clock=clock) as client:
            await client.status(BIKE)
            clock.advance(69.0)  # before the refresh point: the same token
            await client.status(BIKE)
            assert len(sim.calls_to(PATHS["token"])) == 1
            clock.advance(2.0)  # 29 s before it runs out: refreshed first
            await client.status(BIKE)
    assert len(sim.calls_to(PATHS["token"])) == 2
    assert len(sim.calls_to(PATHS["status"])) == 3  # nothing was refused


@pytest.mark.anyio
async def test_token_expired_mid_run_refreshes_and_retries() -> None:
    sim = SegwaySimulator(
        client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, token_lifetime=40.0, token_overlap=0.0
    )
    clock = FakeClock()
    async with sim.serve() as served:
        settings = make_settings(served.url, token_refresh_ahead=0.0)
        async with SegwayClient(settings=settings, clock=clock) as client:
            await client.status(BIKE)
            # the client thinks the token is good for 40 s; the cloud revokes it early
            sim.revoke_tokens()
            await client.lock(BIKE)
            clock.advance(41.0)  # the new one ran out as well: fetched again before the call
            await client.status(BIKE)
    assert len(sim.calls_to(PATHS["token"])) == 3
    assert len(sim.calls_to(PATHS["lock"])) == 2


@pytest.mark.anyio
async def test_token_old_and_new_overlap(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.status(BIKE)
    [old] = sim.tokens
    sim.issue_token()  # a refresh by another process of the same account
    assert sim.bearer_valid(f"bearer {old}")
    await client.status(BIKE)
    assert len(sim.calls_to(PATHS["token"])) == 1


@pytest.mark.anyio
async def test_token_revoked_refreshes_once_and_retries(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.status(BIKE)
    sim.revoke_tokens()
    status = await client.status(BIKE)
    assert status.iot_code == BIKE
    assert len(sim.calls_to(PATHS["token"])) == 2
    # the refused call, then the same call again with the new token
    assert len(sim.calls_to(PATHS["status"])) == 3


@pytest.mark.anyio
async def test_token_refused_twice_auth_failed(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].inject(15101, times=2)
    with pytest.raises(VendorError) as err:
        await client.status(BIKE)
    assert err.value.info.code == ErrorCode.AUTH_FAILED
    assert err.value.info.vendor_code == "15101"
    assert len(sim.calls_to(PATHS["status"])) == 2


@pytest.mark.anyio
async def test_token_concurrent_calls_share_one_refresh(client: SegwayClient, sim: SegwaySimulator) -> None:
    results: list[str] = []

    async def read(device: str) -> None:
        results.append((await client.status(device)).iot_code)

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(read, DEVICES[n % len(DEVICES)])
    assert len(results) == 30
    assert len(sim.calls_to(PATHS["token"])) == 1

    sim.revoke_tokens()
    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(read, DEVICES[n % len(DEVICES)])
    assert len(results) == 60
    assert len(sim.calls_to(PATHS["token"])) == 2


@pytest.mark.anyio
async def test_token_failure_shared_by_waiting_calls(served: ServedApp, sim: SegwaySimulator) -> None:
    errors: list[ErrorCode] = []

    async def read() -> None:
        try:
            await client.status(BIKE)
        except VendorError as exc:
            errors.append(exc.info.code)

    client = SegwayClient(settings=make_settings(served.url, client_secret="wrong"))
    async with client, anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(read)
    assert errors == [ErrorCode.AUTH_FAILED] * 10
    assert len(sim.calls_to(PATHS["token"])) == 1


@pytest.mark.anyio
async def test_token_old_token_used_while_refresh_in_flight() -> None:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, token_lifetime=2000.0)
    clock = FakeClock()
    settings = partial(make_settings, token_refresh_ahead=1000.0)
    async with sim.serve() as served, SegwayClient(settings=settings(served.url), clock=clock) as client:
        await client.status(BIKE)
        clock.advance(1001.0)  # past the refresh point (half the lifetime), token still valid
        sim.token_gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.status, BIKE)  # starts the refresh, held by the gate

            async def refresh_started() -> bool:
                return len(sim.calls_to(PATHS["token"])) == 2

            await eventually(refresh_started)
            for device in DEVICES:
                assert (await client.status(device)).iot_code == device  # not blocked by the refresh
            sim.token_gate.set()
    assert len(sim.calls_to(PATHS["token"])) == 2
    assert len(sim.calls_to(PATHS["status"])) == 2 + len(DEVICES)


@pytest.mark.anyio
async def test_aiohttp_transport_option(served: ServedApp, sim: SegwaySimulator) -> None:
    settings = make_settings(served.url, http_transport="aiohttp")
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="httpx-aiohttp"):
            await SegwayClient(settings=settings).start()
        return
    async with SegwayClient(settings=settings) as client:
        assert (await client.status(BIKE)).iot_code == BIKE
        await client.lock(BIKE)
    assert len(sim.calls_to(PATHS["lock"])) == 1


@pytest.mark.anyio
async def test_client_takes_its_transport_from_the_caller(sim: SegwaySimulator) -> None:
    # the simulator in-process: the transport given is the one the client sends through
    transport = httpx.ASGITransport(app=sim.app)
    async with SegwayClient(settings=make_settings("http://segway.test"), transport=transport) as client:
        assert (await client.status(BIKE)).iot_code == BIKE
    assert [c.path for c in sim.calls] == [PATHS["token"], PATHS["status"]]
