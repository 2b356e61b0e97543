"""Polling under a vendor outage and a Retry-After, under a real ``locktwin run okai``.

Proves, from the simulator's recorded arrival times:
- during a 503 outage the fleet's status reads stop after a few failures and resume only as
  doubling probes (without the pause, 20 scooters polled every 0.5 s make ~40 reads a second);
- a command sent during the outage is not held back by the pause, and succeeds after it;
- after the outage polling recovers by itself, and ``locktwin_poll_backoff_seconds`` showed it;
- reads hold at most half of the cap of vendor calls (the other half is the commands');
- after a 429 with ``Retry-After: 3``, no read reaches the vendor for those 3 seconds.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, log, metric_sum, okai_bridge, scrape, start_bridge
from tests.faults.test_vendor_outage import max_overlap
from twin.backoff import FAILURES_BEFORE_PAUSE
from twin.broker import free_port

pytestmark = pytest.mark.anyio

SCOOTERS = 20
POLL_INTERVAL = 0.5
MAX_IN_FLIGHT = 4  # so reads may hold 2 at once
OUTAGE_SECONDS = 8.0
LATENCY = 0.1  # every call takes this long: reads overlap, and the cap of reads shows
ARRIVAL_JITTER = 0.05  # a call reaches the simulator a little after the bridge started it


def arrivals(sim: OkaiSimulator, path: str, start: float, end: float) -> list[float]:
    return sorted(c.received_at for c in sim.calls if c.path == path and start <= c.received_at <= end)


async def test_polling_pauses_during_an_outage_and_obeys_retry_after(mqtt_broker: str, tmp_path: Path) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=SCOOTERS, bolt_seconds=0.2)
    sim.fleet.latency = LATENCY
    imeis = sim.fleet.imeis
    base = f"lt-polls-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker,
            base=base,
            base_url=base_url,
            imeis=imeis,
            workdir=tmp_path,
            LOCKTWIN_OKAI_POLL_INTERVAL=str(POLL_INTERVAL),
            LOCKTWIN_BRIDGES__OKAI__MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
            LOCKTWIN_METRICS_PORT=str(metrics_port),
        )
        try:
            await start_bridge(bridge, client)
            await client.wait_for(
                lambda: all(client.retained_json(i, "availability") == "online" for i in imeis), timeout=20
            )
            await anyio.sleep(2.0)
            normal_end = time.time()
            normal = arrivals(sim, PATHS["status"], normal_end - 2.0, normal_end)

            # -- a 503 outage, with a command sent in the middle of it
            outage_start = time.time()
            sim.fleet.fail_http(status=503, count=10**9)
            await anyio.sleep(OUTAGE_SECONDS / 2)
            during = await scrape(metrics_port)
            command = await client.send_set(imeis[0], "UNLOCKED", expires_in=OUTAGE_SECONDS + 20)
            await anyio.sleep(OUTAGE_SECONDS / 2)
            sim.fleet.http_faults.clear()
            outage_end = time.time()
            await client.wait_for(lambda: client.answers[command].finals, timeout=30)
            await anyio.sleep(OUTAGE_SECONDS)  # the longest pause so far is about as long as the outage
            recovered_end = time.time()

            # -- a 429 that says when to come back
            told_at = time.time()
            sim.fleet.fail_http(status=429, count=1, retry_after=3)
            # the simulator takes the fault when the request arrives and records the call once it
            # answered (LATENCY later): wait for the record, not for the fault to be taken
            await client.wait_for(
                lambda: any(c.code is None and c.received_at >= told_at for c in sim.calls), timeout=10
            )
            answered_429 = max(c.at for c in sim.calls if c.code is None and c.received_at >= told_at)
            await anyio.sleep(5.0)
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()

    in_outage = arrivals(sim, PATHS["status"], outage_start, outage_end)
    switches = arrivals(sim, PATHS["switch_lock"], outage_start + OUTAGE_SECONDS / 2, outage_end)
    after = arrivals(sim, PATHS["status"], outage_end + OUTAGE_SECONDS - 2.0, recovered_end)
    reads = [c for c in sim.calls if c.path == PATHS["status"] and c.received_at < outage_start]
    at_once = max_overlap([(c.received_at, c.at - ARRIVAL_JITTER) for c in reads])
    quiet = arrivals(sim, PATHS["status"], answered_429 + ARRIVAL_JITTER + LATENCY, answered_429 + 3.0 - ARRIVAL_JITTER)
    resumed = arrivals(sim, PATHS["status"], answered_429 + 3.0, answered_429 + 5.0)
    log(
        f"status reads: {len(normal)} in 2 s before, {len(in_outage)} in the {OUTAGE_SECONDS:.0f} s outage, "
        f"{len(after)} in the last 2 s of recovery; reads at once max {at_once} (cap {MAX_IN_FLIGHT}); "
        f"switchLock during the outage {len(switches)}; after the 429: {len(quiet)} in its 3 s, {len(resumed)} after"
    )
    timeline = [round(t - outage_start, 2) for t in in_outage]
    log(f"reads in the outage at (s): {timeline}; switchLock at: {[round(t - outage_start, 2) for t in switches]}")
    assert len(normal) >= SCOOTERS, "polling did not run before the outage"
    # FAILURES_BEFORE_PAUSE failures (plus the reads under way meanwhile), then a probe per free read
    # slot after each pause of 0.75-1, 1.5-2, 3-4 s (the next, 6-8 s, ends after the outage)
    # That makes 10 here; one more round of slack keeps a loaded machine's timing from failing it.
    slots = MAX_IN_FLIGHT // 2
    assert len(in_outage) <= FAILURES_BEFORE_PAUSE + (slots - 1) + 4 * slots, in_outage
    assert switches, "the command was held back by the poller's pause"
    assert client.answers[command].finals == {"succeeded"}, client.answers[command].statuses
    assert len(after) >= SCOOTERS, "polling did not recover after the outage"
    assert at_once <= MAX_IN_FLIGHT // 2
    assert metric_sum(during, "locktwin_poll_backoff_seconds", vendor="okai") > 0
    assert quiet == [], quiet
    assert resumed, "polling did not resume after the Retry-After"
