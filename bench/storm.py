"""A storm: one ``/set`` to each of N devices at once, against three vendor profiles, one configuration.

    python -m bench.storm [--quick] [--devices N]

The OKAI simulator runs in a process of its own (as a vendor's cloud does) with realistic latency
(200 ms a call, a 1 s bolt, delivered at once), limited per profile (``twin/simlimits.py``,
answered HTTP 429 as ``bridges/okai/simulator/limits.py`` says):

- **a**: the vendor refuses more than 64 calls in flight. Floor: N x calls x latency / 64;
- **b**: the vendor allows 50 calls/s (a token bucket, one second of burst). Floor: N x calls / 50;
- **c**: no limit, and a call takes 1 s (a car). Floor: one command's chain (the call, the bolt, one
  status read), or the bridge's CPU ceiling for N commands when that is longer: the same storm
  against a zero-latency simulator, measured in the same run.

``calls`` is the vendor calls per command the simulator admitted in the same run (a lock call plus
the confirmation reads). The bridge (``BridgeRuntime`` in this process, default ``BridgeOptions``:
one configuration for all three) is new for each profile and first confirms 30 commands (not
counted, in three rounds of 10) so that it has learned when its scooters can be read
(twin.confirmtiming), as a bridge with a history of commands has. Reported per
profile: the storm's time over its floor (goal <= 1.25), commands that did not succeed, vendor
calls answered 429 (goal < 5 %), the learned limit's trajectory (a sparkline of the in-flight limit
sampled every 0.1 s), and the time from the vendor's acknowledgement to ``succeeded`` (p50) over the
bolt plus one status read (goal <= 1.25).

Last, **no starvation**: ``/set`` -> ``succeeded`` of one device at a time (30 commands) on a bridge
whose 10,000 devices are polled at its budget (an hourly budget that paces reads to 50/s), over the
same on an idle bridge (goal: median within 1.2x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import anyio

from bench.common import Report, percentile, private_broker
from bridges.okai.adapter import OkaiAdapter
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import DEMO_SIGN_KEY, DEMO_USER_KEY, imei_for
from twin.broker import free_port
from twin.config import BridgeOptions, MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.ledger import BudgetSettings, next_reset, period_start
from twin.runtime import BridgeRuntime

LATENCY = 0.2
BOLT = 1.0
CAR_LATENCY = 1.0
WARMUP = 30
WARMUP_ROUNDS = 3
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Profile:
    name: str
    what: str
    latency: float
    limits: dict[str, Any]


PROFILES = (
    Profile("a", "the vendor refuses more than 64 calls in flight", LATENCY, {"max_in_flight": 64}),
    Profile("b", "the vendor allows 50 calls/s", LATENCY, {"rate": 50}),
    Profile("c", "no limit, a call takes 1 s", CAR_LATENCY, {}),
)
CPU_CEILING = Profile("cpu", "no limit, no latency, no bolt (the bridge's CPU ceiling)", 0.0, {})


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def simulator(devices: int, latency: float, bolt: float) -> AsyncIterator[tuple[str, str, int]]:
    """The OKAI simulator in a process of its own: (base URL, limits URL, pid)."""
    port = free_port()
    command = [
        sys.executable, "-m", "bridges.okai.simulator", "--port", str(port), "--devices", str(devices),
        "--latency", str(latency), "--bolt-seconds", str(bolt), "--delivery-seconds", "0", "--no-record",
        "--user-key", DEMO_USER_KEY, "--sign-key", DEMO_SIGN_KEY,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        if not line.startswith(b"OKAI simulator on "):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        base = line.split()[3].decode()
        # keep reading what it prints (the list of its devices is longer than a pipe holds)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield base, f"http://127.0.0.1:{port}/_sim/limits", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _limits(url: str, profile: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if profile is None else json.dumps(profile).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "PUT")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


@dataclass
class Storm:
    """Answers and events of the commands, by transaction (receive times, this process's clock)."""

    sent: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    acknowledged: dict[str, float] = field(default_factory=dict)
    finals: dict[str, tuple[str, float, Any]] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)
    expected: int = 0

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            now = time.perf_counter()
            doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            if message.topic.value.endswith("/event"):
                data = doc.get("data") or {}
                if doc.get("type") == "command" and data.get("to") == "acknowledged":
                    self.acknowledged.setdefault(data.get("transaction"), now)
                continue
            tx, status = doc.get("transaction"), doc.get("status")
            if status == "accepted":
                self.accepted.setdefault(tx, now)
            elif status in ("succeeded", "failed", "expired", "superseded", "rejected"):
                self.finals.setdefault(tx, (status, now, doc.get("error")))
                if len(self.finals) >= self.expected:
                    self.done.set()

    async def send(self, client: aiomqtt.Client, devices: list[str], timeout: float) -> float:
        """One /set to each device at once; seconds until the last final answer."""
        self.expected = len(self.finals) + len(devices)
        self.done = anyio.Event()
        started = time.perf_counter()
        for device in devices:
            tx = uuid.uuid4().hex
            self.sent[tx] = time.perf_counter()
            body = json.dumps({"lock": "UNLOCKED", "transaction": tx, "expires_in": 300})
            await client.publish(f"locktwin/okai/{device}/set", body, qos=1)
        with anyio.move_on_after(timeout):
            await self.done.wait()
        return time.perf_counter() - started


def sparkline(samples: list[int], width: int = 48) -> str:
    if not samples:
        return ""
    step = max(1, len(samples) // width)
    picked = [max(samples[i : i + step]) for i in range(0, len(samples), step)]
    low, high = min(picked), max(picked)
    span = max(1, high - low)
    return "".join(SPARKS[min(len(SPARKS) - 1, (v - low) * len(SPARKS) // (span + 1))] for v in picked)


async def run_profile(profile: Profile, devices: int, broker_port: int, work: Path, bolt: float) -> dict[str, Any]:
    ids = [imei_for(i + 1) for i in range(devices + WARMUP)]
    async with simulator(devices + WARMUP, profile.latency, bolt) as (base, limits_url, sim_pid):
        _limits(limits_url, profile.limits)
        settings = OkaiSettings(
            user_key=DEMO_USER_KEY, sign_key=DEMO_SIGN_KEY, base_url=base, devices=ids, poll_interval=None
        )
        runtime = BridgeRuntime(
            adapter=OkaiAdapter(settings=settings),
            mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{broker_port}", client_id=f"storm-{uuid.uuid4().hex[:6]}"),
            data_dir=work / f"data-{profile.name}",
            homeassistant=HomeAssistantSettings(enabled=False),
        )
        storm = Storm()
        trajectory: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(runtime.run)
            with anyio.fail_after(60):
                await runtime.ready.wait()
                await runtime.connected.wait()
            async with (
                aiomqtt.Client("127.0.0.1", broker_port, max_queued_incoming_messages=0) as client,
                anyio.create_task_group() as inner,
            ):
                client.pending_calls_threshold = 100_000
                await client.subscribe([("locktwin/okai/+/response/set", 1), ("locktwin/okai/+/event", 0)])
                inner.start_soon(storm.listen, client)
                step = WARMUP // WARMUP_ROUNDS
                for i in range(0, WARMUP, step):  # learns when the scooters can be read
                    await storm.send(client, ids[i : i + step], timeout=120)
                before = _limits(limits_url)
                gate = runtime.engine.gate
                calls_before, pushed_before = gate.calls, gate.pushed_back

                async def sample() -> None:
                    while True:
                        trajectory.append(gate.limit)
                        await anyio.sleep(0.1)

                inner.start_soon(sample)
                cpu_sim, cpu_self = _cpu_seconds(sim_pid), time.process_time()
                first = len(storm.finals)
                took = await storm.send(client, ids[WARMUP:], timeout=600)
                cpu_sim, cpu_self = _cpu_seconds(sim_pid) - cpu_sim, time.process_time() - cpu_self
                after = _limits(limits_url)
                inner.cancel_scope.cancel()
            tg.cancel_scope.cancel()
    finals = list(storm.finals.items())[first:]
    statuses = [status for _, (status, _, _) in finals]
    ack_to_done = [
        at - storm.acknowledged[tx] for tx, (s, at, _) in finals if s == "succeeded" and tx in storm.acknowledged
    ]
    admitted = after["admitted"] - before["admitted"]
    refused = sum(after["refused"].values()) - sum(before["refused"].values())
    return {
        "seconds": took,
        "commands": devices,
        "succeeded": statuses.count("succeeded"),
        "failed": [e for _, (s, _, e) in finals if s != "succeeded"][:3],
        "not_succeeded": len(finals) - statuses.count("succeeded") + (devices - len(finals)),
        "calls_per_command": admitted / devices,
        "refused": refused,
        "refused_share": refused / max(1, admitted + refused),
        "bridge_calls": gate.calls - calls_before,
        "bridge_pushed_back": gate.pushed_back - pushed_before,
        "ack_to_succeeded_p50": percentile(ack_to_done, 50),
        "limit_trajectory": trajectory,
        "limit_final": trajectory[-1] if trajectory else None,
        "peak_in_flight_at_vendor": after["peak_in_flight"],
        "cpu_bench_process": cpu_self,
        "cpu_simulator": cpu_sim,
    }


async def starvation(fleet: int, broker_port: int, work: Path, reads_per_second: float = 50.0) -> dict[str, Any]:
    """/set -> succeeded, one at a time, on an idle bridge and on one whose fleet of ``fleet`` devices
    is polled at its budget (an hourly budget whose pace is ``reads_per_second``)."""
    ids = [imei_for(i + 1) for i in range(fleet)]
    out: dict[str, Any] = {}
    async with simulator(fleet, LATENCY, BOLT) as (base, limits_url, _):
        for name, polled in (("idle", False), ("polled", True)):
            now = time.time()
            until_reset = next_reset(period_start(now, "hour"), "hour") - now
            budget = BudgetSettings(calls=int(reads_per_second * until_reset / 0.9) + 100, per="hour", reserve=0.1)
            settings = OkaiSettings(
                user_key=DEMO_USER_KEY, sign_key=DEMO_SIGN_KEY, base_url=base, devices=ids,
                poll_interval=30.0 if polled else None,
            )  # fmt: skip
            runtime = BridgeRuntime(
                adapter=OkaiAdapter(settings=settings),
                mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{broker_port}", client_id=f"starve-{uuid.uuid4().hex[:6]}"),
                data_dir=work / f"starve-{name}",
                options=BridgeOptions(budget=budget) if polled else BridgeOptions(),
                homeassistant=HomeAssistantSettings(enabled=False),
            )
            storm = Storm()
            async with anyio.create_task_group() as tg:
                tg.start_soon(runtime.run)
                with anyio.fail_after(120):
                    await runtime.ready.wait()
                    await runtime.connected.wait()
                async with (
                    aiomqtt.Client("127.0.0.1", broker_port, max_queued_incoming_messages=0) as client,
                    anyio.create_task_group() as inner,
                ):
                    client.pending_calls_threshold = 100_000
                    await client.subscribe([("locktwin/okai/+/response/set", 1)])
                    inner.start_soon(storm.listen, client)
                    await anyio.sleep(6)  # the poller is at its pace (its first reads are spread over 5 s)
                    mine = ids[:40] if name == "idle" else ids[40:80]  # scooters that are still locked
                    for device in mine[:10]:  # learns when the scooters can be read
                        await storm.send(client, [device], timeout=60)
                    admitted, started = _limits(limits_url)["admitted"], time.perf_counter()
                    latencies = [await storm.send(client, [device], timeout=60) for device in mine[10:]]
                    rate = (_limits(limits_url)["admitted"] - admitted) / (time.perf_counter() - started)
                    inner.cancel_scope.cancel()
                tg.cancel_scope.cancel()
            out[name] = {"p50": percentile(latencies, 50), "vendor_calls_per_second": rate}
    return out


async def measure(devices: int, report: Report) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="locktwin-storm-") as tmp, private_broker(Path(tmp) / "mq") as broker:
        work = Path(tmp)
        results["cpu"] = await run_profile(CPU_CEILING, devices, broker.port, work, bolt=0.0)
        for profile in PROFILES:
            results[profile.name] = await run_profile(profile, devices, broker.port, work, bolt=BOLT)
            shutil.rmtree(work / f"data-{profile.name}", ignore_errors=True)
        results["starvation"] = await starvation(10_000, broker.port, work)
    ceiling = results["cpu"]["seconds"]
    report.value(f"storm: commands at once per profile (N), {WARMUP} more first to learn", devices)
    report.value("storm: the bridge's CPU ceiling, N commands at zero latency", round(ceiling, 2), " s")
    for profile in PROFILES:
        r = results[profile.name]
        calls = r["calls_per_command"]
        if profile.name == "a":
            floor = devices * calls * profile.latency / 64
        elif profile.name == "b":
            floor = devices * calls / 50
        else:
            floor = max(profile.latency + BOLT + profile.latency, ceiling)
        r["floor"] = floor
        report.ratio(f"storm {profile.name}: {profile.what}", r["seconds"], floor, "<= 1.25", " s")
        report.value(f"storm {profile.name}: vendor calls per command (admitted)", round(calls, 2))
        report.value(f"storm {profile.name}: commands not succeeded (goal 0)", r["not_succeeded"])
        report.value(
            f"storm {profile.name}: vendor calls answered 429 (goal < 5 %)", round(100 * r["refused_share"], 2), " %"
        )
        spark = sparkline(r["limit_trajectory"])
        low, high = min(r["limit_trajectory"] or [0]), max(r["limit_trajectory"] or [0])
        report.value(f"storm {profile.name}: learned limit {low}..{high}, every 0.1 s: {spark}", r["limit_final"] or 0)
        report.ratio(
            f"storm {profile.name}: acknowledged -> succeeded p50, over the bolt + one status read",
            r["ack_to_succeeded_p50"],
            BOLT + profile.latency,
            "<= 1.25",
            " s",
        )
    starved = results["starvation"]
    report.ratio(
        "storm: /set -> succeeded p50 while 10,000 devices are polled at their budget, over an idle bridge",
        starved["polled"]["p50"],
        starved["idle"]["p50"],
        "<= 1.2",
        " s",
    )
    report.value(
        "storm: vendor calls/s meanwhile, polled (paced by the budget to 50 reads/s) and idle",
        round(starved["polled"]["vendor_calls_per_second"], 1),
    )
    return results


async def main(devices: int) -> Report:
    report = Report(name="storm")
    results = await measure(devices, report)
    report.write()
    detail = Path(__file__).resolve().parent / "results" / "storm-detail.json"
    detail.write_text(json.dumps(results, indent=1))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 1,000 (5,000 otherwise)")
    parser.add_argument("--devices", type=int, default=None)
    args = parser.parse_args()
    anyio.run(main, args.devices or (1000 if args.quick else 5000))
