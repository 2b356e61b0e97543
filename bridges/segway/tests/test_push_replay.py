"""Captured pushes: an exact copy, a stale push and a replay after a restart change nothing (issue 16).

A Segway push is signed but carries no nonce; what bounds a captured one is its own timestamp and
the ledger of pushes already stored (``bridges.segway.replay``). These tests hold whether or not the
engine also refuses observations older than a device's watermark: they count what the receiver
itself refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest

from bridges.segway import SegwayAdapter, create_push_app
from bridges.segway.push import PushStats
from bridges.segway.replay import PushLedger, Verdict
from bridges.segway.simulator import SegwaySimulator
from twin.asgi import serve_asgi
from twin.testing import BridgeHarness

from .conftest import CLIENT_ID, DEVICES, SECRET, RecordingSink, make_settings

pytestmark = pytest.mark.anyio

BIKE = DEVICES[0]
#: the receiver's clock in the tests that inject one
NOW = 1_700_000_200.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def signed(fields: dict[str, str]) -> str:
    text = "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + "&client_secret=" + SECRET
    return urlencode({**fields, "signature": hashlib.md5(text.encode()).hexdigest()})


def status(*, locked: bool, at: float, odometer: int = 12345) -> dict[str, str]:
    return {
        "iotCode": BIKE,
        "platformCode": CLIENT_ID,
        "online": "true",
        "locked": "true" if locked else "false",
        "powerPercent": "64",
        "odometer": str(odometer),
        "statusUtcTime": str(int(at)),
    }


@dataclass
class GatedSink(RecordingSink):
    """Reports wait for ``gate`` (so that copies of a push arrive while the first is being stored)."""

    gate: anyio.Event = field(default_factory=anyio.Event)
    waiting: int = 0

    async def report(self, device_id: str, patch: Any, *, source: str) -> bool:
        self.waiting += 1
        await self.gate.wait()
        return await super().report(device_id, patch, source=source)


@pytest.fixture
def stats() -> PushStats:
    return PushStats()


@pytest.fixture
def gated() -> GatedSink:
    return GatedSink(devices=set(DEVICES))


@pytest.fixture
async def receiver(gated: GatedSink, stats: PushStats) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings("http://127.0.0.1:9")
    app = create_push_app(gated, settings, stats=stats, clock=lambda: NOW)
    async with serve_asgi(app) as served, httpx.AsyncClient(base_url=served.url) as http:
        yield http


async def test_push_exact_copy_changes_nothing(receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats) -> None:
    gated.gate.set()
    push = signed(status(locked=False, at=NOW - 10))
    first = await receiver.post("/v2/vehicle/status", content=push, headers=FORM)
    assert first.status_code == 200
    copies = [await receiver.post("/v2/vehicle/status", content=push, headers=FORM) for _ in range(3)]
    # the same push percent-encoded otherwise, or its signature in capitals: still the same push
    reencoded = push.replace("iotCode=8", "iotCode=%38", 1)
    copies.append(await receiver.post("/v2/vehicle/status", content=reencoded, headers=FORM))
    upper = push[: push.index("signature=") + 10] + push[push.index("signature=") + 10 :].upper()
    copies.append(await receiver.post("/v2/vehicle/status", content=upper, headers=FORM))
    assert [(c.status_code, c.json()) for c in copies] == [(200, {"code": 0, "message": "ignored: already stored"})] * 5
    assert len(gated.reports) == 1
    assert stats.replayed == 5
    # another push of the same bike is no copy
    other = await receiver.post("/v2/vehicle/status", content=signed(status(locked=False, at=NOW - 9)), headers=FORM)
    assert other.status_code == 200
    assert len(gated.reports) == 2


async def test_push_copy_sent_to_another_webhook_changes_nothing(
    receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats
) -> None:
    # the signature does not cover the path: a fault reposted as an alert is the same push
    fault = signed({"iotCode": BIKE, "platformCode": CLIENT_ID, "statusUtcTime": str(int(NOW)), "code": "1"})
    assert (await receiver.post("/v2/vehicle/fault", content=fault, headers=FORM)).status_code == 200
    assert (await receiver.post("/v2/vehicle/alert", content=fault, headers=FORM)).status_code == 200
    assert [t.value for _, t, _ in gated.events] == ["fault"]
    assert stats.replayed == 1


async def test_push_older_than_window_answered_200_changes_nothing(
    receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats
) -> None:
    gated.gate.set()
    window = make_settings(None).push_window
    stale = await receiver.post(
        "/v2/vehicle/status", content=signed(status(locked=False, at=NOW - window - 1)), headers=FORM
    )
    assert stale.status_code == 200  # so that Segway does not send it again
    assert stale.json()["message"].startswith("ignored: dated more than")
    location = {"iotCode": BIKE, "platformCode": CLIENT_ID, "latitude": "52.1", "longitude": "4.3"}
    old_fix = await receiver.post(
        "/v2/vehicle/location", content=signed({**location, "gpsUtcTime": str(int(NOW - 3600))}), headers=FORM
    )
    assert old_fix.status_code == 200
    assert gated.reports == []
    assert stats.stale == 2
    inside = await receiver.post(
        "/v2/vehicle/status", content=signed(status(locked=False, at=NOW - window + 1)), headers=FORM
    )
    assert inside.status_code == 200
    assert len(gated.reports) == 1


async def test_push_without_timestamp_refused(receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats) -> None:
    fields = status(locked=False, at=NOW)
    del fields["statusUtcTime"]
    undated = await receiver.post("/v2/vehicle/status", content=signed(fields), headers=FORM)
    assert undated.status_code == 400
    assert "statusUtcTime" in undated.json()["message"]
    zero = await receiver.post("/v2/vehicle/status", content=signed(status(locked=False, at=0)), headers=FORM)
    assert zero.status_code == 400
    nonsense = await receiver.post(
        "/v2/vehicle/status", content=signed({**fields, "statusUtcTime": "1e300"}), headers=FORM
    )
    assert nonsense.status_code == 400
    assert gated.reports == []
    assert (stats.undated, stats.invalid) == (2, 1)


async def test_push_copies_arriving_together_stored_once(
    receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats
) -> None:
    push = signed(status(locked=False, at=NOW))
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await receiver.post("/v2/vehicle/status", content=push, headers=FORM))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        tg.start_soon(send)
        with anyio.fail_after(5):
            while stats.received < 2 or gated.waiting < 1:  # noqa: ASYNC110 - both are in, one is storing
                await anyio.sleep(0.01)
        gated.gate.set()
    assert sorted(a.status_code for a in answers) == [200, 200]
    assert len(gated.reports) == 1
    assert gated.waiting == 1
    assert stats.replayed == 1


async def test_push_copy_of_one_not_stored_is_stored(
    receiver: httpx.AsyncClient, gated: GatedSink, stats: PushStats
) -> None:
    # Segway's own retry of a push answered 503 must go through
    gated.gate.set()
    gated.fail_next = 1
    push = signed(status(locked=False, at=NOW))
    assert (await receiver.post("/v2/vehicle/status", content=push, headers=FORM)).status_code == 503
    assert (await receiver.post("/v2/vehicle/status", content=push, headers=FORM)).status_code == 200
    assert len(gated.reports) == 1
    assert stats.replayed == 0


def test_push_ledger_kept_across_reopen_private_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "segway" / "pushes.sqlite"
    ledger = PushLedger(path=path, window=300, capacity=100)
    ledger.open(now=NOW)
    ledger.remember("a" * 32, NOW - 5, now=NOW)
    ledger.remember("f" * 32, NOW + 3600, now=NOW)  # dated in the future: kept until then + window
    ledger.close()
    again = PushLedger(path=path, window=300, capacity=100)
    again.open(now=NOW + 1)
    assert again.verdict("a" * 32, NOW - 5, now=NOW + 1) is Verdict.REPLAYED
    assert again.verdict("b" * 32, NOW - 5, now=NOW + 1) is Verdict.NEW
    assert again.verdict("a" * 32, NOW - 5, now=NOW + 296) is Verdict.STALE
    assert again.verdict("f" * 32, NOW + 3600, now=NOW + 3000) is Verdict.REPLAYED
    # at capacity the oldest are forgotten, and refused as stale from then on, never accepted again
    for n in range(150):
        again.remember(f"{n:032x}", NOW + n, now=NOW + n)
    assert len(again) <= 100
    assert again.verdict(f"{0:032x}", NOW, now=NOW + 150) is Verdict.STALE
    assert again.verdict(f"{149:032x}", NOW + 149, now=NOW + 150) is Verdict.REPLAYED
    again.close()
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


async def test_mqtt_push_replayed_after_restart_changes_nothing(mqtt_broker: str, tmp_path: Path) -> None:
    """The issue's replay: a signed UNLOCKED push, stored, then the bike locked, the bridge restarted
    and the push sent again. Also: a push older than the window sent to the new bridge."""
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, bolt_seconds=0.05, tick=0.02)
    base = f"lt-replay-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    captured = signed(status(locked=False, at=time.time() - 30))
    async with sim.serve() as served:
        settings = make_settings(served.url, push_enabled=True, poll_interval=None)
        first = SegwayAdapter(settings=settings)
        async with BridgeHarness(adapter=first, broker_url=mqtt_broker, data_dir=tmp_path, base_topic=base) as h:
            assert first.push_address is not None
            async with httpx.AsyncClient(base_url=first.push_address.url) as http:
                assert (await http.post("/v2/vehicle/status", content=captured, headers=FORM)).status_code == 200
            await h.wait_retained(BIKE, "twin", lambda t: t["reported"].get("lock") == "UNLOCKED")
            sim.fleet[BIKE].locked = False
            locked = await h.set(BIKE, {"lock": "LOCKED"})
            assert locked["status"] == "succeeded", locked
        second = SegwayAdapter(settings=settings)
        async with BridgeHarness(adapter=second, broker_url=mqtt_broker, data_dir=tmp_path, base_topic=base) as h:
            await h.wait_retained(BIKE, "twin", lambda t: t["reported"].get("lock") == "LOCKED")
            assert second.push_address is not None
            async with httpx.AsyncClient(base_url=second.push_address.url) as http:
                replay = await http.post("/v2/vehicle/status", content=captured, headers=FORM)
                hour_old = await http.post(
                    "/v2/vehicle/status", content=signed(status(locked=False, at=time.time() - 3600)), headers=FORM
                )
            await h.get(BIKE)  # a round trip through the bridge after both
            twin = h.retained_json(BIKE, "twin")
            drifts = h.events(BIKE, "drift")
    assert (replay.status_code, hour_old.status_code) == (200, 200)
    assert twin["reported"]["lock"] == "LOCKED"
    assert drifts == []
    # refused by the receiver itself (whatever the engine would make of them)
    assert (second.push_stats.replayed, second.push_stats.stale, second.push_stats.stored) == (1, 1, 0)
