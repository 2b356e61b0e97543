"""Soak: a real ``locktwin run segway`` under mixed commands and signed Segway pushes for N minutes.

    .venv/bin/python -m bench.soak --minutes 10            # the issue's 10-minute soak
    .venv/bin/python -m bench.soak --minutes 1 --rate 40   # quicker, busier

The Segway simulator is served in this process (its vehicles move, and it pushes on changes to the
bridge's webhook); this process also sends a mix of ``/set`` lock/unlock, ``/get``, ``request/find``
and extra status/location/alert pushes at ``--rate`` per second. Every second it samples the
bridge process's resident memory (``VmRSS`` of ``/proc/<pid>/status``) and open descriptors
(``/proc/<pid>/fd``). After the warm-up (the first ``--warmup`` fraction of the run) resident memory
must grow less than 10 % and descriptors must not grow, both read at rest (no load for a few
seconds) after the warm-up and at the end; pooled keep-alive connections to the vendor are counted
apart and must stay within the pool bound; every command must have had its final answer; the process must be
alive. Exit status 0 when all of that holds. ``tests/faults/test_soak.py`` runs the same for ~20 s.

The 30 s vendor outage of the issue is ``LOCKTWIN_FAULTS_OUTAGE=30 .venv/bin/pytest -s
tests/faults/test_vendor_outage.py`` (the test uses 10 s).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

from bridges.segway.simulator import DEMO_CLIENT_SECRET, SegwaySimulator
from tests.faults.common import Client, fd_kinds, log, start_bridge
from twin.broker import MosquittoBroker, free_port
from twin.testing_process import BridgeProcess

#: resident memory may grow this much after the warm-up
RSS_GROWTH_LIMIT = 0.10
#: descriptors at rest (pooled keep-alive connections to the vendor aside) may not grow at all
FD_ALLOWANCE = 0
#: pooled keep-alive connections to the vendor at rest: at most one per call slot (max_in_flight)
VENDOR_POOL_LIMIT = 16
#: seconds without load before RSS and descriptors are read "at rest" (HTTP keep-alive is 5 s)
QUIET_SECONDS = 6.0


@dataclass
class SoakResult:
    seconds: float
    devices: int
    commands: int
    gets: int
    actions: int
    pushes: int
    unanswered: int
    outcomes: dict[str, int]
    rss_kib_after_warmup: int
    rss_kib_end: int
    rss_growth: float
    fds_after_warmup: int
    fds_end: int
    fds_max_under_load: int
    vendor_connections_end: int
    alive: bool
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and self.unanswered == 0
            and self.rss_growth < RSS_GROWTH_LIMIT
            and self.fds_end <= self.fds_after_warmup + FD_ALLOWANCE
            and self.vendor_connections_end <= VENDOR_POOL_LIMIT
        )

    def summary(self) -> str:
        return (
            f"soak {self.seconds:.0f}s, {self.devices} devices: commands={self.commands} gets={self.gets} "
            f"actions={self.actions} pushes={self.pushes} unanswered={self.unanswered} outcomes={self.outcomes}; "
            f"RSS {self.rss_kib_after_warmup} KiB after warm-up -> {self.rss_kib_end} KiB at the end "
            f"({self.rss_growth * 100:+.1f}%, limit +{RSS_GROWTH_LIMIT * 100:.0f}%); "
            f"fds at rest, pooled vendor connections aside: {self.fds_after_warmup} -> {self.fds_end} "
            f"(allowance +{FD_ALLOWANCE}); pooled vendor connections at rest {self.vendor_connections_end} "
            f"(limit {VENDOR_POOL_LIMIT}); fds max under load {self.fds_max_under_load}; alive={self.alive}"
        )


async def soak(
    *,
    broker_url: str,
    workdir: Path,
    seconds: float,
    devices: int = 20,
    rate: float = 20.0,
    warmup: float = 0.3,
    seed: int = 1,
) -> SoakResult:
    rng = random.Random(seed)
    sim = SegwaySimulator(client_secret=DEMO_CLIENT_SECRET, devices=devices, bolt_seconds=0.2)
    ids = list(sim.fleet.ids)
    base = f"lt-soak-{uuid.uuid4().hex[:8]}"
    push_port = free_port()
    samples: list[tuple[float, int, int]] = []
    counts = {"commands": 0, "gets": 0, "actions": 0, "pushes": 0}
    async with sim.serve() as served, anyio.create_task_group() as tg:
        client = Client(broker_url=broker_url, base=base, vendor="segway", resend_after=5.0)
        await tg.start(client.run)
        bridge = BridgeProcess(
            vendor="segway",
            broker_url=broker_url,
            data_dir=workdir / "data",
            base=base,
            env={
                "LOCKTWIN_SEGWAY_CLIENT_ID": sim.client_id,
                "LOCKTWIN_SEGWAY_CLIENT_SECRET": DEMO_CLIENT_SECRET,
                "LOCKTWIN_SEGWAY_BASE_URL": served.url,
                "LOCKTWIN_SEGWAY_DEVICES": json.dumps(ids),
                "LOCKTWIN_SEGWAY_POLL_INTERVAL": "15",
                "LOCKTWIN_SEGWAY_PUSH_ENABLED": "true",
                "LOCKTWIN_SEGWAY_PUSH_PORT": str(push_port),
                "LOCKTWIN_LOG_LEVEL": "WARNING",
            },
            log_path=workdir / "bridge.log",
        )
        try:
            await start_bridge(bridge, client)
            sim.webhook_url = f"http://127.0.0.1:{push_port}"
            tg.start_soon(client.resender)
            transactions: list[str] = []

            async def sampler() -> None:
                t0 = time.monotonic()
                while True:
                    samples.append((time.monotonic() - t0, bridge.rss_kib(), bridge.fds()))
                    await anyio.sleep(1.0)

            async def one(kind: str, device: str) -> None:
                if kind == "set":
                    lock = rng.choice(["LOCKED", "UNLOCKED"])
                    transactions.append(await client.send_set(device, lock, expires_in=15))
                    counts["commands"] += 1
                elif kind == "get":
                    await client.publish(client.topic(device, "get"), json.dumps({"transaction": _txn()}).encode())
                    counts["gets"] += 1
                elif kind == "find":
                    body = json.dumps({"transaction": _txn(), "expires_in": 15}).encode()
                    await client.publish(client.topic(device, "request/find"), body)
                    counts["actions"] += 1
                else:
                    if kind == "status":
                        await sim.push_status(device)
                    elif kind == "location":
                        await sim.push_location(device)
                    else:
                        await sim.push_alert(device, rng.choice([1, 2, 3]), appearing=rng.random() < 0.5)
                    counts["pushes"] += 1

            kinds = ["set", "set", "get", "find", "status", "status", "location", "alert"]

            async def load(duration: float) -> None:
                async with anyio.create_task_group() as running:
                    t0 = time.monotonic()
                    i = 0
                    while time.monotonic() - t0 < duration:
                        await anyio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                        running.start_soon(one, rng.choice(kinds), rng.choice(ids))
                        i += 1
                        if i % max(1, int(rate * 60)) == 0 and samples:
                            log(f"soak +{time.monotonic() - t0:.0f}s: RSS {samples[-1][1]} KiB, fds {samples[-1][2]}")

            async def quiet() -> tuple[int, int, int]:
                """Answers in, pooled and pushed connections closed: (RSS KiB, fds) at rest."""
                webhook, sim.webhook_url = sim.webhook_url, None
                with anyio.move_on_after(30):
                    await client.wait_for(lambda: not client.unfinished(), timeout=30)
                await anyio.sleep(QUIET_SECONDS)
                rest = []
                for _ in range(3):
                    kinds = fd_kinds(bridge.pid)
                    pooled = kinds.get(f"tcp->{served.port}", 0)
                    rest.append((bridge.rss_kib(), sum(kinds.values()) - pooled, pooled))
                    await anyio.sleep(0.5)
                sim.webhook_url = webhook
                log(f"descriptors at rest: {kinds}")
                return int(statistics.median(r[0] for r in rest)), min(r[1] for r in rest), min(r[2] for r in rest)

            tg.start_soon(sampler)
            await load(seconds * warmup)
            rest_after_warmup = await quiet()
            log(f"after warm-up, at rest: RSS {rest_after_warmup[0]} KiB, fds {rest_after_warmup[1]}")
            await load(seconds * (1 - warmup))
            rest_end = await quiet()
            alive = bridge.alive()
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()

    outcomes: dict[str, int] = {}
    for txn in client.sent:
        for final in client.answers[txn].finals:
            outcomes[final] = outcomes.get(final, 0) + 1
    return SoakResult(
        seconds=seconds,
        devices=devices,
        unanswered=len(client.unfinished()),
        outcomes=outcomes,
        rss_kib_after_warmup=rest_after_warmup[0],
        rss_kib_end=rest_end[0],
        rss_growth=rest_end[0] / rest_after_warmup[0] - 1,
        fds_after_warmup=rest_after_warmup[1],
        fds_end=rest_end[1],
        fds_max_under_load=max(s[2] for s in samples),
        vendor_connections_end=rest_end[2],
        alive=alive,
        samples=samples,
        **counts,
    )


def _txn() -> str:
    return f"s-{uuid.uuid4().hex[:16]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="commands and pushes per second")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run that is warm-up")
    parser.add_argument("--mqtt-url", help="a broker to use (default: a private mosquitto)")
    parser.add_argument("--json", type=Path, help="write the result (with every sample) here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="locktwin-soak-"))
    broker = None
    url = args.mqtt_url
    if url is None:
        broker = MosquittoBroker(workdir=workdir / "mosquitto")
        (workdir / "mosquitto").mkdir()
        broker.start()
        url = broker.url
    try:
        result = anyio.run(
            lambda: soak(
                broker_url=url,
                workdir=workdir,
                seconds=args.minutes * 60,
                devices=args.devices,
                rate=args.rate,
                warmup=args.warmup,
            )
        )
    finally:
        if broker is not None:
            broker.stop()
    print(result.summary())
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
