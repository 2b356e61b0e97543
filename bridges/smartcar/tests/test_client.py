"""The HTTP client against the simulator: error bodies -> taxonomy, Retry-After gate, metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.client import SmartcarClient, error_from_response, parse_instant
from bridges.smartcar.simulator import ERRORS, InjectedError, SmartcarSimulator, serve_simulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink

from .conftest import linked, make_settings, make_simulator

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("error", "code", "vendor_code"),
    [
        ("ASLEEP", ErrorCode.VEHICLE_ASLEEP, "VEHICLE_STATE:ASLEEP"),
        ("UNREACHABLE", ErrorCode.DEVICE_OFFLINE, "VEHICLE_STATE:UNREACHABLE"),
        ("IN_MOTION", ErrorCode.DEVICE_BUSY, "VEHICLE_STATE:IN_MOTION"),
        ("RATE_LIMIT", ErrorCode.RATE_LIMITED, "RATE_LIMIT:VEHICLE"),
        ("PERMISSION", ErrorCode.PERMISSION_DENIED, "PERMISSION"),
        ("COMPATIBILITY", ErrorCode.UNSUPPORTED, "COMPATIBILITY:VEHICLE_NOT_CAPABLE"),
        ("UPSTREAM", ErrorCode.VENDOR_UNAVAILABLE, "UPSTREAM:UNKNOWN_ISSUE"),
        ("SERVER", ErrorCode.VENDOR_UNAVAILABLE, "SERVER:INTERNAL"),
    ],
)
async def test_errors_mapped_to_taxonomy(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, error: str, code: ErrorCode, vendor_code: str
) -> None:
    vehicle_id = sim.fleet.ids[0]
    sim.fleet.inject(vehicle_id, error)
    with pytest.raises(VendorError) as caught:
        await adapter.api.security(sim.fleet[vehicle_id].user_id, vehicle_id)
    info = caught.value.info
    assert info.code is code
    assert info.vendor_code == vendor_code
    assert info.vendor_message == ERRORS[error].description
    if error == "RATE_LIMIT":
        assert info.retry_after == 1.0
        assert info.retryable
    # one car's limit or state says nothing about Smartcar as a whole; an outage does
    assert caught.value.vendor_wide is (code is ErrorCode.VENDOR_UNAVAILABLE)


async def test_errors_authentication_is_auth_failed(served: ServedApp, sim: SmartcarSimulator) -> None:
    client = SmartcarClient(settings=make_settings(served.url))
    await client.start()
    try:
        with pytest.raises(VendorError) as caught:
            await client.request("GET", f"/vehicles/{sim.fleet.ids[0]}/security", token="not-a-token")
        with pytest.raises(VendorError) as unknown_path:
            await client.request("GET", "/nowhere", token="not-a-token")
    finally:
        await client.stop()
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_code == "AUTHENTICATION"
    assert unknown_path.value.info.code is ErrorCode.UNKNOWN_DEVICE


async def test_errors_token_endpoint_bad_client(served: ServedApp) -> None:
    client = SmartcarClient(settings=make_settings(served.url, client_secret="wrong"))
    await client.start()
    try:
        with pytest.raises(VendorError) as caught:
            await client.refresh("whatever")
    finally:
        await client.stop()
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_code == "invalid_client"


async def test_errors_unreachable_cloud_is_vendor_unavailable() -> None:
    client = SmartcarClient(settings=make_settings("http://127.0.0.1:9", request_timeout=2.0))
    await client.start()
    try:
        with pytest.raises(VendorError) as caught:
            await client.request("GET", "/vehicles", token="t")
    finally:
        await client.stop()
    assert caught.value.info.code is ErrorCode.VENDOR_UNAVAILABLE


def test_errors_non_json_bodies() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    assert (
        error_from_response(httpx.Response(503, text="down", request=request)).info.code is ErrorCode.VENDOR_UNAVAILABLE
    )
    limited = error_from_response(httpx.Response(429, text="slow", headers={"Retry-After": "7"}, request=request))
    assert (limited.info.code, limited.info.retry_after) == (ErrorCode.RATE_LIMITED, 7.0)
    assert error_from_response(httpx.Response(418, text="?", request=request)).info.code is ErrorCode.VENDOR_ERROR


def test_parse_instant_accepts_z_and_rejects_garbage() -> None:
    assert parse_instant("2026-01-02T03:04:05.678Z") == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert parse_instant("nonsense") is None
    assert parse_instant(None) is None


async def test_rate_limit_no_call_before_retry_after(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle_id = sim.fleet.ids[0]
    user_id = sim.fleet[vehicle_id].user_id
    sim.fleet.inject(vehicle_id, "RATE_LIMIT")
    with pytest.raises(VendorError) as first:
        await adapter.api.security(user_id, vehicle_id)
    refused_at = sim.calls[-1].at
    assert first.value.info.retry_after == 1.0
    # the gate is closed: refused locally, nothing reaches Smartcar
    while True:
        try:
            await adapter.api.security(user_id, vehicle_id)
            break
        except VendorError as exc:
            assert exc.info.code is ErrorCode.RATE_LIMITED
            assert not exc.vendor_wide  # this car's gate only
            assert exc.info.retry_after is not None and exc.info.retry_after <= 1.0
            await anyio.sleep(min(exc.info.retry_after, 0.2))
    calls = [c for c in sim.calls if c.vehicle_id == vehicle_id and c.at >= refused_at]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 1.0
    # another vehicle was never gated
    other = sim.fleet.ids[1]
    await adapter.api.security(user_id, other)


async def test_rate_limit_vehicle_budget_of_simulator(sink: RecordingSink) -> None:
    sim = make_simulator(devices=1, vehicle_rate_limit=(2, 30.0))
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url)
        user_id = await linked(settings, sim, sink)
        adapter = SmartcarAdapter(settings=settings)
        await adapter.start(sink)
        try:
            (device,) = await adapter.list_devices()  # one attributes call counts
            await adapter.api.security(user_id, device.id)
            with pytest.raises(VendorError) as caught:
                await adapter.api.security(user_id, device.id)
            with pytest.raises(VendorError) as local:
                await adapter.api.security(user_id, device.id)
        finally:
            await adapter.stop()
    assert caught.value.info.code is ErrorCode.RATE_LIMITED
    assert caught.value.info.retry_after is not None and caught.value.info.retry_after >= 29
    assert local.value.info.vendor_code == "RATE_LIMIT"
    assert [c.status for c in sim.calls if c.vehicle_id][-1] == 429


async def test_data_age_header_becomes_observed_at(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle = sim.fleet[sim.fleet.ids[0]]
    vehicle.data_lag = 120.0
    answer = await adapter.api.security(vehicle.user_id, vehicle.id)
    assert answer.meta.data_age is not None and answer.meta.fetched_at is not None
    lag = answer.meta.fetched_at - answer.meta.data_age
    assert timedelta(seconds=119) < lag < timedelta(seconds=121)
    assert answer.meta.request_id


async def test_rate_limit_app_wide_gate_closes_every_vehicle(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    first, second = sim.fleet.ids[:2]
    user_id = sim.fleet[first].user_id
    sim.fleet.inject(
        first,
        InjectedError(429, "RATE_LIMIT", "SMARTCAR_API", "Too many requests to Smartcar.", "RETRY_LATER", 2.0),
    )
    with pytest.raises(VendorError) as caught:
        await adapter.api.security(user_id, first)
    assert caught.value.info.vendor_code == "RATE_LIMIT:SMARTCAR_API"
    assert caught.value.vendor_wide  # the application's limit: background reads of every car pause
    calls = len(sim.calls)
    with pytest.raises(VendorError) as gated:
        await adapter.api.security(user_id, second)
    assert gated.value.info.code is ErrorCode.RATE_LIMITED
    assert gated.value.vendor_wide
    assert gated.value.info.retry_after is not None and 0 < gated.value.info.retry_after <= 2.0
    assert len(sim.calls) == calls


async def test_errors_offline_vehicle_is_device_offline(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    vehicle = sim.fleet[sim.fleet.ids[0]]
    vehicle.online = False
    with pytest.raises(VendorError) as caught:
        await adapter.read_status(vehicle.id)
    assert caught.value.info.code is ErrorCode.DEVICE_OFFLINE
    assert caught.value.info.retryable


def test_errors_retry_after_as_http_date() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    limited = error_from_response(httpx.Response(429, headers={"Retry-After": soon}, request=request))
    assert limited.info.retry_after is not None and 25 < limited.info.retry_after <= 30
    garbage = error_from_response(httpx.Response(429, headers={"Retry-After": "soon"}, request=request))
    assert garbage.info.retry_after is None


async def test_client_takes_its_transport_from_the_caller() -> None:
    # the simulator in-process: the transport given is the one the client sends through
    sim = make_simulator()
    client = SmartcarClient(settings=make_settings("http://smartcar.test"), transport=httpx.ASGITransport(app=sim.app))
    await client.start()
    try:
        tokens = await client.exchange_code(sim.issue_code())
        answer = await client.request("GET", "/vehicles", token=tokens.access_token)
    finally:
        await client.stop()
    assert answer.body["vehicles"] == sim.fleet.ids
    assert [c.path for c in sim.calls] == ["/oauth/token", "/v2.0/vehicles"]
