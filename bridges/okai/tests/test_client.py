from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest
from pydantic import SecretStr

from bridges.okai.client import PATHS, OkaiClient
from bridges.okai.models import OkaiCode
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import OkaiSimulator
from bridges.okai.tests.helpers import SIGN_KEY, USER_KEY, served_client, settings_for
from contracts.errors import ErrorCode
from twin.adapter import VendorError


def _sim(**kwargs: object) -> OkaiSimulator:
    return OkaiSimulator(user_key=USER_KEY, devices=2, bolt_seconds=0.0, delivery_seconds=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_status_unsigned_mode() -> None:
    sim = _sim()
    async with served_client(sim) as client:
        status = await client.status(sim.fleet.imeis[0])
    assert status.lockStatus == 1
    assert status.online is True
    call = sim.calls[-1]
    assert call.method == "GET"
    assert call.path == PATHS["status"]
    assert "sign" not in call.params
    assert call.code == OkaiCode.SUCCESS


@pytest.mark.anyio
@pytest.mark.parametrize("auth_in", ["params", "headers"])
@pytest.mark.parametrize("sign_params", ["all", "business"])
async def test_switch_lock_signed_mode(auth_in: str, sign_params: str) -> None:
    sim = _sim(sign_key=SIGN_KEY, sign_params=sign_params)
    imei = sim.fleet.imeis[0]
    async with served_client(sim, auth_in=auth_in) as client:
        await client.switch_lock(imei, operate="unlock", expire_time=5)
        status = await client.status(imei)
    assert status.lockStatus == 0
    switch = sim.calls_to(PATHS["switch_lock"])[0]
    assert switch.auth_in == auth_in
    assert switch.params["expireTime"] == 5
    assert switch.params["operate"] == "unlock"
    assert len(switch.params["sign"]) == 32
    assert sim.fleet[imei].commands[0].outcome == "applied"


@pytest.mark.anyio
async def test_switch_lock_wrong_signature_auth_failed() -> None:
    sim = _sim(sign_key=SIGN_KEY)
    async with served_client(sim, sign_key=SecretStr("not-the-sign-key")) as client:
        with pytest.raises(VendorError) as caught:
            await client.switch_lock(sim.fleet.imeis[0], operate="unlock", expire_time=5)
    info = caught.value.info
    assert info.code is ErrorCode.AUTH_FAILED
    assert info.vendor_code == str(int(OkaiCode.SIGN_ERROR))
    assert "signature" in info.message
    assert info.retryable is False
    assert "not-the-sign-key" not in str(caught.value) and SIGN_KEY not in str(caught.value)
    assert sim.fleet[sim.fleet.imeis[0]].commands == []


@pytest.mark.anyio
async def test_switch_lock_sign_params_mismatch_auth_failed() -> None:
    sim = _sim(sign_key=SIGN_KEY, sign_params="business")
    async with served_client(sim, sign_params="all") as client:
        with pytest.raises(VendorError) as caught:
            await client.status(sim.fleet.imeis[0])
    assert caught.value.info.code is ErrorCode.AUTH_FAILED


@pytest.mark.anyio
async def test_status_missing_signature_auth_failed() -> None:
    sim = _sim(sign_key=SIGN_KEY)
    async with served_client(sim, sign_key=None) as client:
        with pytest.raises(VendorError) as caught:
            await client.status(sim.fleet.imeis[0])
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_message == "sign is required"


@pytest.mark.anyio
async def test_status_wrong_user_key_auth_failed() -> None:
    sim = _sim()
    async with served_client(sim, user_key=SecretStr("someone-else")) as client:
        with pytest.raises(VendorError) as caught:
            await client.status(sim.fleet.imeis[0])
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert caught.value.info.vendor_code == str(int(OkaiCode.USER_KEY_INVALID))
    assert "someone-else" not in str(caught.value)


@pytest.mark.anyio
async def test_status_stale_timestamp_auth_failed() -> None:
    sim = _sim(sign_key=SIGN_KEY, max_skew=60.0)
    async with served_client(sim) as client:
        stale = OkaiClient(settings=client._settings, clock=lambda: time.time() - 3600)
        await stale.open()
        try:
            with pytest.raises(VendorError) as caught:
                await stale.status(sim.fleet.imeis[0])
        finally:
            await stale.aclose()
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert "timestamp" in caught.value.info.message


@pytest.mark.anyio
async def test_status_timestamp_in_seconds_accepted() -> None:
    sim = _sim(sign_key=SIGN_KEY)
    async with served_client(sim, timestamp_unit="s") as client:
        await client.status(sim.fleet.imeis[0])
    assert len(sim.calls[-1].params["timestamp"]) == 10


@pytest.mark.anyio
async def test_switch_lock_unknown_code_vendor_error() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet.inject(code=55555, msg="battery cover open", imei=imei)
    async with served_client(sim) as client:
        with pytest.raises(VendorError) as caught:
            await client.switch_lock(imei, operate="lock", expire_time=5)
    info = caught.value.info
    assert info.code is ErrorCode.VENDOR_ERROR
    assert (info.vendor_code, info.vendor_message) == ("55555", "battery cover open")
    assert info.retryable is False


@pytest.mark.anyio
async def test_switch_lock_refused_vendor_error() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].refuse = True
    async with served_client(sim) as client:
        with pytest.raises(VendorError) as caught:
            await client.switch_lock(imei, operate="unlock", expire_time=5)
    assert caught.value.info.code is ErrorCode.VENDOR_ERROR
    assert caught.value.info.vendor_code == str(int(OkaiCode.DEVICE_REFUSED))


@pytest.mark.anyio
async def test_switch_lock_offline_device_offline() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].set_online(False)
    async with served_client(sim) as client:
        with pytest.raises(VendorError) as caught:
            await client.switch_lock(imei, operate="unlock", expire_time=5)
    assert caught.value.info.code is ErrorCode.DEVICE_OFFLINE
    assert caught.value.info.retryable is True


@pytest.mark.anyio
async def test_status_unknown_imei_unknown_device() -> None:
    sim = _sim()
    async with served_client(sim) as client:
        with pytest.raises(VendorError) as caught:
            await client.status("000000000000000")
    assert caught.value.info.code is ErrorCode.UNKNOWN_DEVICE


@pytest.mark.anyio
async def test_status_http_503_vendor_unavailable() -> None:
    sim = _sim()
    sim.fleet.fail_http(status=503, count=1)
    async with served_client(sim) as client:
        with pytest.raises(VendorError) as caught:
            await client.status(sim.fleet.imeis[0])
        assert (await client.status(sim.fleet.imeis[0])).online is True
    assert caught.value.info.code is ErrorCode.VENDOR_UNAVAILABLE
    assert caught.value.info.retryable is True


@pytest.mark.anyio
async def test_status_timeout_vendor_unavailable() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].latency = 0.5
    async with served_client(sim, timeout=0.1) as client:
        with pytest.raises(VendorError) as caught:
            await client.status(imei)
    assert caught.value.info.code is ErrorCode.VENDOR_UNAVAILABLE
    assert caught.value.info.retryable is True


@pytest.mark.anyio
async def test_status_connection_refused_vendor_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = OkaiSettings(user_key=SecretStr(USER_KEY), base_url=f"http://127.0.0.1:{port}", devices=["1"])
    client = OkaiClient(settings=settings)
    await client.open()
    try:
        with pytest.raises(VendorError) as caught:
            await client.status("1")
    finally:
        await client.aclose()
    assert caught.value.info.code is ErrorCode.VENDOR_UNAVAILABLE


@pytest.mark.anyio
async def test_status_error_code_table_configurable() -> None:
    sim = _sim()
    imei = sim.fleet.imeis[0]
    sim.fleet.inject(code=55555, msg="busy", imei=imei)
    table = {"55555": ErrorCode.DEVICE_BUSY}
    async with served_client(sim, error_codes=table) as client:
        with pytest.raises(VendorError) as caught:
            await client.status(imei)
    assert caught.value.info.code is ErrorCode.DEVICE_BUSY


@pytest.mark.anyio
async def test_status_query_secrets_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    sim = _sim(sign_key=SIGN_KEY)
    async with served_client(sim, auth_in="params") as client:
        await client.status(sim.fleet.imeis[0])
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines and all("userKey=***" in line and "sign=***" in line for line in lines)
    assert all(USER_KEY not in line for line in lines)


@pytest.mark.anyio
async def test_client_takes_its_transport_from_the_caller() -> None:
    # the simulator in-process: the transport given is the one the client sends through
    sim = OkaiSimulator(user_key=USER_KEY, sign_key=SIGN_KEY, devices=1)
    imei = sim.fleet.imeis[0]
    settings = settings_for(f"http://okai.test{sim.base_path}", sim)
    client = OkaiClient(settings=settings, transport=httpx.ASGITransport(app=sim.app))
    await client.open()
    try:
        status = await client.status(imei)
    finally:
        await client.aclose()
    assert status.imei == imei
    assert [c.path for c in sim.calls] == [PATHS["status"]]
