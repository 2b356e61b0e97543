"""Every 15xxx code of the document, and HTTP-level failures, mapped to the taxonomy (real HTTP)."""

from __future__ import annotations

import pytest

from bridges.segway.client import PATHS, SegwayClient
from bridges.segway.errors import CODES
from bridges.segway.simulator import SegwaySimulator
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.asgi import ServedApp

from .conftest import DEVICES, make_settings

BIKE = DEVICES[0]

# written from the issue and the document, independently of bridges.segway.errors
EXPECTED: dict[int, tuple[ErrorCode, bool]] = {
    15100: (ErrorCode.AUTH_FAILED, False),
    15004: (ErrorCode.INVALID_PAYLOAD, False),
    15001: (ErrorCode.VENDOR_UNAVAILABLE, True),
    15102: (ErrorCode.UNKNOWN_DEVICE, False),
    15300: (ErrorCode.PERMISSION_DENIED, False),
    15301: (ErrorCode.DEVICE_OFFLINE, True),
    15302: (ErrorCode.DEVICE_TIMEOUT, True),
    15303: (ErrorCode.DEVICE_OFFLINE, True),
    15400: (ErrorCode.VENDOR_ERROR, False),
    15500: (ErrorCode.DEVICE_BUSY, True),
    15600: (ErrorCode.DEVICE_BUSY, False),
    15601: (ErrorCode.VENDOR_ERROR, False),
    15602: (ErrorCode.DEVICE_TIMEOUT, True),
    15603: (ErrorCode.VENDOR_ERROR, False),
    15611: (ErrorCode.VENDOR_ERROR, False),
    15612: (ErrorCode.DEVICE_TIMEOUT, True),
    15635: (ErrorCode.POLICY_DENIED, False),
    15638: (ErrorCode.VENDOR_ERROR, False),
    15707: (ErrorCode.UNSUPPORTED, False),
    15990: (ErrorCode.PERMISSION_DENIED, False),
    15996: (ErrorCode.POLICY_DENIED, False),
    15997: (ErrorCode.DEVICE_BUSY, False),
}


def test_codes_table_covers_the_document() -> None:
    documented = {15101, *EXPECTED}
    assert set(CODES) == documented


@pytest.mark.anyio
@pytest.mark.parametrize("code", sorted(EXPECTED))
async def test_error_code_mapped(client: SegwayClient, sim: SegwaySimulator, code: int) -> None:
    sim.fleet[BIKE].inject(code)
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    expected_code, retryable = EXPECTED[code]
    info = err.value.info
    assert (info.code, info.retryable) == (expected_code, retryable)
    assert info.vendor_code == str(code)
    assert info.vendor_message  # the cloud's msg is kept
    assert len(sim.calls_to(PATHS["lock"])) == 1  # the client itself never repeats


@pytest.mark.anyio
async def test_error_upgrading_retry_after(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].upgrading = True
    with pytest.raises(VendorError) as err:
        await client.unlock(BIKE)
    assert err.value.info.vendor_code == "15500"
    assert err.value.info.retry_after is not None


@pytest.mark.anyio
async def test_error_unknown_code_vendor_error(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.fleet[BIKE].inject(15999)
    with pytest.raises(VendorError) as err:
        await client.status(BIKE)
    assert err.value.info.code == ErrorCode.VENDOR_ERROR
    assert err.value.info.vendor_code == "15999"


@pytest.mark.anyio
async def test_error_http_5xx_vendor_unavailable(client: SegwayClient, sim: SegwaySimulator) -> None:
    await client.status(BIKE)
    sim.fail_next(502)
    with pytest.raises(VendorError) as err:
        await client.status(BIKE)
    assert err.value.info.code == ErrorCode.VENDOR_UNAVAILABLE
    assert err.value.info.retryable is True
    assert (await client.status(BIKE)).iot_code == BIKE


@pytest.mark.anyio
async def test_error_http_timeout_vendor_unavailable(served: ServedApp, sim: SegwaySimulator) -> None:
    async with SegwayClient(settings=make_settings(served.url, request_timeout=0.2)) as client:
        await client.status(BIKE)
        sim.stall_next(1.0)
        with pytest.raises(VendorError) as err:
            await client.status(BIKE)
    assert err.value.info.code == ErrorCode.VENDOR_UNAVAILABLE
    assert err.value.info.retryable is True


@pytest.mark.anyio
async def test_error_unreachable_vendor_unavailable() -> None:
    async with SegwayClient(settings=make_settings("http://127.0.0.1:9")) as client:
        with pytest.raises(VendorError) as err:
            await client.status(BIKE)
    assert err.value.info.code == ErrorCode.VENDOR_UNAVAILABLE


@pytest.mark.anyio
async def test_error_unknown_device(client: SegwayClient) -> None:
    with pytest.raises(VendorError) as err:
        await client.status("999999999999999")
    assert err.value.info.code == ErrorCode.UNKNOWN_DEVICE


@pytest.mark.anyio
async def test_error_restricted_account(client: SegwayClient, sim: SegwaySimulator) -> None:
    sim.restricted = True
    with pytest.raises(VendorError) as err:
        await client.lock(BIKE)
    assert err.value.info.code == ErrorCode.PERMISSION_DENIED
    assert err.value.info.vendor_code == "15990"
