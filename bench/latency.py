"""Command latency: ``/set`` -> final ``succeeded`` through a real bridge, p50/p99, over its floor.

    python -m bench.latency [--commands 300] [--profile]

Bridge: ``BridgeRuntime`` in-process (see ``bench/command.py`` for why), private mosquitto, the OKAI
simulator at zero latency over real HTTP. Floor: one bare MQTT request/response (QoS 1) whose
responder makes the same HTTP calls per command the bridge made (counted in a warm-up), with the
adapter's client, to the same simulator. Both run in the same process, broker and run.

Bridge and floor are up together and measured in alternating rounds (floor first in one round,
bridge first in the next): this machine's speed drifts by tens of percent within a minute, and
measuring one whole series after the other moved the ratio by ~0.3 between runs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio

from bench.command import bridge, calls_per_command, commander, floor, okai_stack, sequential
from bench.common import Report, percentile, private_broker
from bench.profiling import profiled

DEVICES = 10
WARMUP = 30
ROUNDS = 10  # the floor and the bridge take turns this many times


async def measure(commands: int, report: Report, profile: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="locktwin-lat-") as tmp, private_broker(Path(tmp)) as broker:
        async with okai_stack(broker.port, DEVICES) as stack, bridge(stack) as runtime, commander(broker.port) as cmd:
            before = stack.app.counts.copy()
            await sequential(cmd.command, stack.devices, WARMUP)
            calls = calls_per_command(before, stack.app.counts, WARMUP, stack.sim.base_path)
            limit = runtime.engine.gate.ceiling
            async with floor(stack, calls, int(limit)) as fl:
                await sequential(fl.command, stack.devices, WARMUP)
                measured: list[float] = []
                bare: list[float] = []
                per_round = max(1, commands // ROUNDS)
                for i in range(ROUNDS):
                    series = [(fl.command, bare), (cmd.command, measured)]
                    for send, latencies in series if i % 2 == 0 else reversed(series):
                        latencies.extend(await sequential(send, stack.devices, per_round))
            if profile:  # apart from the figures: the profiler slows what it watches
                with profiled("latency", enabled=True):
                    await sequential(cmd.command, stack.devices, commands)
    ms = 1000.0
    report.value("latency: HTTP calls per command", len(calls))
    report.value("latency: commands each, bridge and floor in alternating rounds", len(measured))
    report.ratio(
        f"latency p50 ({len(measured)} sequential /set)",
        percentile(measured, 50) * ms,
        percentile(bare, 50) * ms,
        "<= 1.75",  # a regression guard: the per-step command events and commits stay (bench/README.md)
        " ms",
    )
    report.ratio(
        f"latency p99 ({len(measured)} sequential /set)",
        percentile(measured, 99) * ms,
        percentile(bare, 99) * ms,
        "<= 2",
        " ms",
    )


async def main(commands: int, profile: bool) -> None:
    report = Report(name="latency")
    await measure(commands, report, profile)
    report.write()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="write a pyinstrument profile to bench/results")
    args = parser.parse_args()
    anyio.run(main, args.commands, args.profile)
