"""Vendor outage: the OKAI cloud answers 503 (or hangs) for a while, under a real ``locktwin run okai``.

Proves: retries are bounded by the backoff (per command) and by the concurrency cap (calls at once,
read from the simulator's recorded arrival times); commands that outlive the outage succeed after
it, commands that expire during it end ``expired``/``failed`` and never ``succeeded``; the metrics
endpoint shows the failed vendor calls by outcome; the device stays ``online`` (the vendor is out,
not the scooter) and the bridge recovers by itself: a new command afterwards succeeds.

The outage lasts ``OUTAGE_SECONDS`` (10 s here; ``bench/soak.py --outage 30`` runs the 30 s variant
of the issue, or set ``LOCKTWIN_FAULTS_OUTAGE=30``).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import anyio
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, log, metric_sum, okai_bridge, scrape, start_bridge
from twin.broker import free_port

pytestmark = pytest.mark.anyio

OUTAGE_SECONDS = float(os.environ.get("LOCKTWIN_FAULTS_OUTAGE", "10"))
MAX_IN_FLIGHT = 4
CLIENT_TIMEOUT = 2.0  # LOCKTWIN_OKAI_TIMEOUT: a hung call is given up after this
HANG_SECONDS = 3.0  # the simulator's latency while it "hangs" (longer than the client waits)
LONG = 6  # commands that outlive the outage
SHORT = 6  # commands that expire during it
SHORT_EXPIRY = 5.0
#: how late a call may reach the simulator after the bridge started it: a call that needs a new
#: keep-alive connection arrived 0.12 s after the others of its batch on a loaded CI machine, and a
#: later batch that started exactly 2 s after it then looked like 7 calls at once. A bridge over its
#: cap still shows: its extra calls start together and overlap for nearly the whole 2 s.
JITTER = 0.3


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, b in intervals if b > a] + [(b, -1) for a, b in intervals if b > a])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("mode", ["503", "hang"])
async def test_vendor_outage(mqtt_broker: str, tmp_path: Path, mode: str) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=LONG + SHORT + 1, bolt_seconds=0.2)
    imeis = sim.fleet.imeis
    base = f"lt-outage-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    long_expiry = OUTAGE_SECONDS + 25.0
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker,
            base=base,
            base_url=base_url,
            imeis=imeis,
            workdir=tmp_path,
            LOCKTWIN_OKAI_TIMEOUT=str(CLIENT_TIMEOUT),
            LOCKTWIN_OKAI_POLL_INTERVAL="120",
            LOCKTWIN_BRIDGES__OKAI__MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
            LOCKTWIN_METRICS_PORT=str(metrics_port),
        )
        try:
            await start_bridge(bridge, client)
            first = await client.send_set(imeis[-1], "UNLOCKED", expires_in=15)
            await client.wait_for(lambda: client.answers[first].finals, timeout=20)
            assert client.answers[first].finals == {"succeeded"}
            # the first polls of the fleet (jittered over 5 s) tell every scooter's availability
            await client.wait_for(
                lambda: all(client.retained_json(i, "availability") == "online" for i in imeis), timeout=20
            )

            # -- the outage
            outage_start = time.time()
            if mode == "503":
                sim.fleet.fail_http(status=503, count=10**9)
            else:
                sim.fleet.latency = HANG_SECONDS
            long_txns = [await client.send_set(imei, "UNLOCKED", expires_in=long_expiry) for imei in imeis[:LONG]]
            short_txns = [
                await client.send_set(imei, "UNLOCKED", expires_in=SHORT_EXPIRY) for imei in imeis[LONG : LONG + SHORT]
            ]
            await anyio.sleep(OUTAGE_SECONDS / 2)
            during = await scrape(metrics_port)
            availability_during = {client.retained_json(i, "availability") for i in imeis[: LONG + SHORT]}
            await anyio.sleep(max(0.0, outage_start + OUTAGE_SECONDS - time.time()))
            sim.fleet.http_faults.clear()
            sim.fleet.latency = 0.0
            outage_end = time.time()
            log(f"{mode} outage over after {outage_end - outage_start:.1f}s")

            # -- recovery, by itself
            await client.wait_for(
                lambda: all(client.answers[t].finals for t in long_txns + short_txns), timeout=long_expiry + 20
            )
            after = await client.send_set(imeis[-1], "LOCKED", expires_in=15)
            await client.wait_for(lambda: client.answers[after].finals, timeout=20)
            final_metrics = await scrape(metrics_port)
            bridge_state = client.retained.get(f"{base}/bridge/okai/state")
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()

    long_final = {t: client.answers[t].finals for t in long_txns}
    short_final = {t: client.answers[t].finals for t in short_txns}
    assert all(f == {"succeeded"} for f in long_final.values()), long_final
    assert all(f <= {"expired", "failed"} and len(f) == 1 for f in short_final.values()), short_final
    assert client.answers[after].finals == {"succeeded"}, client.answers[after].statuses
    assert bridge_state == b"online"
    assert availability_during == {"online"}, availability_during

    # -- bounded retries: per command by the backoff, at once by the concurrency cap
    in_outage = [c for c in sim.calls if outage_start <= c.received_at <= outage_end]
    switches = [c for c in in_outage if c.path == PATHS["switch_lock"]]
    per_device: dict[str, int] = {}
    for c in switches:
        per_device[str(c.params["imei"])] = per_device.get(str(c.params["imei"]), 0) + 1
    per_second = max_in_window([c.received_at for c in in_outage], 1.0)
    # Each hung call holds a slot of the cap from its start until the client gives up: at least
    # min(client timeout, the command's remaining life >= expireTime). Arrival lags the start by a
    # little (JITTER): these lower-bound intervals overlap no more than the calls really did.
    holds = []
    for c in in_outage:
        hold = CLIENT_TIMEOUT
        if c.path == PATHS["switch_lock"]:
            hold = min(hold, float(c.params["expireTime"]))
        holds.append((c.received_at, c.received_at + hold - JITTER))
    at_once = max_overlap(holds)
    # backoff 0.5 s x 2^(n-1), jittered down to half: attempts start at least 0.25, 0.5, 1, 2, 4, 8 ... s apart
    min_gaps = [0.25 * 2**k for k in range(20)]
    budget = 1 + next(k for k in range(20) if sum(min_gaps[: k + 1]) > OUTAGE_SECONDS)
    log(
        f"{mode}: calls during the outage={len(in_outage)} (switchLock {len(switches)}), max per second={per_second}, "
        + (f"max calls at once={at_once} (cap {MAX_IN_FLIGHT}), " if mode == "hang" else "")
        + f"switchLock per device max={max(per_device.values(), default=0)} (backoff budget {budget})"
    )
    assert max(per_device.values(), default=0) <= budget, per_device
    if mode == "hang":
        timeline = [
            (
                round(c.received_at - outage_start, 2),
                round(c.at - outage_start, 2),
                c.path,
                c.params.get("imei"),
                c.params.get("expireTime"),
            )
            for c in sorted(in_outage, key=lambda c: c.received_at)
        ]
        assert at_once <= MAX_IN_FLIGHT, "\n".join(map(str, timeline))
    else:
        assert per_second <= (LONG + SHORT) * 4, per_second

    # -- metrics tell the story
    unavailable = metric_sum(during, "locktwin_vendor_call_seconds_count", vendor="okai", outcome="VENDOR_UNAVAILABLE")
    timeouts = metric_sum(during, "locktwin_vendor_call_seconds_count", vendor="okai", outcome="DEVICE_TIMEOUT")
    expired = metric_sum(final_metrics, "locktwin_commands_total", vendor="okai", status="expired")
    failed = metric_sum(final_metrics, "locktwin_commands_total", vendor="okai", status="failed")
    succeeded = metric_sum(final_metrics, "locktwin_commands_total", vendor="okai", status="succeeded")
    log(
        f"{mode}: metrics during: vendor calls VENDOR_UNAVAILABLE={unavailable:.0f} DEVICE_TIMEOUT={timeouts:.0f}; "
        f"after: commands succeeded={succeeded:.0f} expired={expired:.0f} failed={failed:.0f}; "
        f"short commands ended {sorted(next(iter(f)) for f in short_final.values())}"
    )
    # Known gap, reported and not asserted: a hung call the bridge gave up on may still be carried out
    # by the vendor, and the command is then answered "expired" (which promises it never reached it).
    taken = sum(bool(sim.fleet[imei].commands) for imei in imeis[LONG : LONG + SHORT])
    log(f"{mode}: short commands answered expired/failed that the vendor's cloud accepted anyway: {taken}")
    assert unavailable + timeouts > 0
    assert expired + failed == SHORT
    assert succeeded == LONG + 2
