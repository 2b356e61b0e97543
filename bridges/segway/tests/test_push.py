"""Push intake over real HTTP: signatures, ordering, events, limits, and the simulator's pushes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest

from bridges.segway import SegwayAdapter, SegwaySettings, create_push_app
from bridges.segway.push import PushStats
from bridges.segway.simulator import SegwaySimulator
from contracts.messages import EventType, LockState
from twin.asgi import serve_asgi
from twin.testing_fakes import RecordingSink

from .conftest import CLIENT_ID, DEVICES, SECRET, eventually, make_settings

BIKE = DEVICES[0]
#: the receiver's clock in these tests: the pushes below are dated around 1_700_000_000
NOW = 1_700_000_200.0


def doc_signature(fields: dict[str, str], secret: str) -> str:
    """The document's recipe, written out step by step, independently of the bridge's code."""
    # step 1: every received parameter but the signature, ordered by ASCII of the key
    keys = sorted(k for k in fields if k != "signature")
    # step 2: "key1=value1&key2=value2"
    text = "&".join(k + "=" + fields[k] for k in keys)
    # step 3: append "&client_secret="
    text = text + "&client_secret=" + secret
    # step 4: MD5, 32 hexadecimal characters
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@pytest.fixture
def stats() -> PushStats:
    return PushStats()


@pytest.fixture
async def receiver(sink: RecordingSink, stats: PushStats) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings("http://127.0.0.1:9", push_max_body=2048)
    async with (
        serve_asgi(create_push_app(sink, settings, stats=stats, clock=lambda: NOW)) as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        yield http


def status_fields(*, locked: bool, at: int, device: str = BIKE) -> dict[str, str]:
    return {
        "iotCode": device,
        "platformCode": CLIENT_ID,
        "online": "true",
        "locked": "true" if locked else "false",
        "lockVoltage": "412",
        "networkSignal": "20",
        "charging": "false",
        "powerPercent": "64",
        "speed": "0",
        "odometer": "12345",
        "remainderRange": "1230",
        "totalRidingSecs": "600",
        "statusUtcTime": str(at),
    }


async def post(http: httpx.AsyncClient, path: str, fields: dict[str, str], *, sign: bool = True) -> httpx.Response:
    body = dict(fields)
    if sign:
        body["signature"] = doc_signature(fields, SECRET)
    return await http.post(path, content=urlencode(body), headers={"Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.anyio
async def test_push_status_signed_by_document_recipe_accepted(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    answer = await post(receiver, "/v2/vehicle/status", status_fields(locked=False, at=1_700_000_000))
    assert answer.status_code == 200
    assert answer.json()["code"] == 0
    [(device, patch, source)] = sink.reports
    assert (device, source) == (BIKE, "push")
    assert patch.observed_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert patch.values["lock"] == LockState.UNLOCKED
    assert patch.values["remaining_range_m"] == 12300
    assert patch.values["odometer_m"] == 12345
    assert patch.values["battery"] == 64
    assert patch.values["online"] is True


@pytest.mark.anyio
async def test_push_bad_signature_401_no_change(
    receiver: httpx.AsyncClient, sink: RecordingSink, stats: PushStats
) -> None:
    fields = status_fields(locked=False, at=1_700_000_000)
    wrong = {**fields, "signature": doc_signature(fields, "not-the-secret")}
    answer = await post(receiver, "/v2/vehicle/status", wrong, sign=False)
    assert answer.status_code == 401
    missing = await post(receiver, "/v2/vehicle/status", fields, sign=False)
    assert missing.status_code == 401
    signed = {**fields, "signature": doc_signature(fields, SECRET)}
    tampered = {**signed, "locked": "true"}
    assert (await post(receiver, "/v2/vehicle/status", tampered, sign=False)).status_code == 401
    assert sink.reports == []
    assert stats.bad_signature == 3


@pytest.mark.anyio
async def test_push_extra_fields_are_signed_too(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    fields = {**status_fields(locked=True, at=1_700_000_000), "brandNewField": "x y&z"}
    answer = await post(receiver, "/v2/vehicle/status", fields)
    assert answer.status_code == 200
    assert len(sink.reports) == 1


@pytest.mark.anyio
async def test_push_signed_over_raw_encoded_values_accepted(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    # the document's step 1 splits the received string itself: values still percent-encoded
    body = f"iotCode={BIKE}&platformCode={CLIENT_ID}&statusUtcTime=1700000000&code=1&note=a+b%26c"
    raw = dict(pair.split("=", 1) for pair in body.split("&"))
    body += "&signature=" + doc_signature(raw, SECRET)
    answer = await receiver.post(
        "/v2/vehicle/alert", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200
    assert len(sink.events) == 1


@pytest.mark.anyio
async def test_push_reordered_older_status_never_wins(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    await post(receiver, "/v2/vehicle/status", status_fields(locked=False, at=1_700_000_100))
    answer = await post(receiver, "/v2/vehicle/status", status_fields(locked=True, at=1_700_000_000))
    assert answer.status_code == 200
    observed = [patch.observed_at for _, patch, _ in sink.reports]
    assert observed == [datetime.fromtimestamp(t, UTC) for t in (1_700_000_100, 1_700_000_000)]
    assert sink.state[BIKE]["lock"] == LockState.UNLOCKED


@pytest.mark.anyio
async def test_push_alert_and_fault_events(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    base = {"iotCode": BIKE, "platformCode": CLIENT_ID, "statusUtcTime": "1700000000"}
    assert (await post(receiver, "/v2/vehicle/alert", {**base, "alertStatus": "0", "code": "2"})).status_code == 200
    assert (await post(receiver, "/v2/vehicle/alert", {**base, "alertStatus": "1", "code": "2"})).status_code == 200
    assert (await post(receiver, "/v2/vehicle/alert", {**base, "code": "12"})).status_code == 200
    assert (await post(receiver, "/v2/vehicle/fault", {**base, "faultStatus": "0", "code": "33"})).status_code == 200
    assert [(t, d["code"], d["status"], d["meaning"]) for _, t, d in sink.events] == [
        (EventType.ALERT, 2, "appearing", "vehicle fell down when locked"),
        (EventType.ALERT, 2, "disappeared", "vehicle fell down"),
        (EventType.ALERT, 12, "appearing", "low power"),
        (EventType.FAULT, 33, "appearing", "fault 33"),
    ]
    assert sink.events[0][2]["observed_at"] == "2023-11-14T22:13:20+00:00"
    assert sink.reports == []


@pytest.mark.anyio
async def test_push_location_zero_and_invalid_dropped(
    receiver: httpx.AsyncClient, sink: RecordingSink, stats: PushStats
) -> None:
    base = {"iotCode": BIKE, "platformCode": CLIENT_ID, "satelliteNumber": "7", "hdop": "0.9", "altitude": "3"}
    zero = {**base, "locationStatus": "valid", "latitude": "0.0", "longitude": "0.0", "gpsUtcTime": "1700000000"}
    invalid = {**base, "locationStatus": "invalid", "latitude": "52.1", "longitude": "4.3", "gpsUtcTime": "1700000001"}
    good = {**base, "locationStatus": "valid", "latitude": "52.1", "longitude": "4.3", "gpsUTCTime": "1700000002"}
    for fields in (zero, invalid):
        assert (await post(receiver, "/v2/vehicle/location", fields)).status_code == 200
    assert sink.reports == []
    assert stats.dropped_position == 2
    assert (await post(receiver, "/v2/vehicle/location", good)).status_code == 200
    [(_, patch, _)] = sink.reports
    assert patch.values == {"latitude": 52.1, "longitude": 4.3, "hdop": 0.9, "satellites": 7, "altitude": 3.0}
    assert patch.observed_at == datetime.fromtimestamp(1_700_000_002, UTC)


@pytest.mark.anyio
async def test_push_location_signatrue_spelling_accepted(receiver: httpx.AsyncClient, sink: RecordingSink) -> None:
    fields = {"iotCode": BIKE, "platformCode": CLIENT_ID, "latitude": "52.1", "longitude": "4.3"}
    fields["gpsUtcTime"] = "1700000000"
    body = {**fields, "signatrue": doc_signature(fields, SECRET)}
    assert (await post(receiver, "/v2/vehicle/location", body, sign=False)).status_code == 200
    assert len(sink.reports) == 1


@pytest.mark.anyio
async def test_push_unknown_device_counted_and_ignored(
    receiver: httpx.AsyncClient, sink: RecordingSink, stats: PushStats
) -> None:
    answer = await post(receiver, "/v2/vehicle/status", status_fields(locked=False, at=1, device="1234"))
    assert answer.status_code == 200
    assert sink.reports == []
    assert stats.unknown_device == 1


@pytest.mark.anyio
async def test_push_body_limit_and_content_type(receiver: httpx.AsyncClient, stats: PushStats) -> None:
    big = {**status_fields(locked=True, at=1), "padding": "x" * 4096}
    assert (await post(receiver, "/v2/vehicle/status", big)).status_code == 413
    assert stats.too_large == 1
    answer = await receiver.post("/v2/vehicle/status", json=status_fields(locked=True, at=1))
    assert answer.status_code == 415
    assert (await receiver.get("/v2/vehicle/status")).status_code == 405


@pytest.mark.anyio
async def test_push_answer_waits_for_store_and_sim_retries_once(
    receiver: httpx.AsyncClient, sink: RecordingSink
) -> None:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, push_retry_delay=0.1)
    sim.webhook_url = str(receiver.base_url)
    sink.fail_next = 1  # the store is down for the first attempt
    record = await sim.push_status(BIKE)
    assert record.attempts == [503, 200]
    assert len(sink.reports) == 1
    sink.fail_next = 2
    record = await sim.push_status(BIKE, powerPercent=63)  # another push (the same again is a replay)
    assert record.attempts == [503, 503]  # retried once only


@pytest.mark.anyio
async def test_push_from_simulator_through_adapter_intake(sink: RecordingSink) -> None:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, bolt_seconds=0.05, tick=0.02)
    async with sim.serve() as served:
        settings = make_settings(served.url, push_enabled=True, poll_interval=None)
        adapter = SegwayAdapter(settings=settings)
        await adapter.start(sink)
        assert adapter.push is not None
        try:
            async with adapter.push.serving(sink):  # as the bridge does, once its engine runs
                assert adapter.push_address is not None
                sim.webhook_url = adapter.push_address.url
                await adapter.lock(BIKE, locked=False, ctx=None)  # type: ignore[arg-type]

                async def unlocked_by_push() -> bool:
                    return sink.state.get(BIKE, {}).get("lock") == LockState.UNLOCKED

                await eventually(unlocked_by_push)
                assert all(source == "push" for _, _, source in sink.reports)
                await sim.push_alert(BIKE, 1)
                assert sink.events[-1][2]["meaning"] == "illegal moving"
                assert adapter.push_stats.stored >= 2
        finally:
            await adapter.stop()
    assert all(p.delivered for p in sim.pushes)


def test_push_settings_defaults() -> None:
    settings = SegwaySettings(client_id="E1", client_secret="x")  # type: ignore[arg-type]
    assert settings.push_enabled is False
    assert settings.push_host == "127.0.0.1"
