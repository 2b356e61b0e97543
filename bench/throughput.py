"""Command throughput: commands/s of one bridge with 200 in flight on 200 devices, over its floor.

    python -m bench.throughput [--devices 200] [--per-device 10] [--profile]

Same set-up as ``bench.latency``: in-process bridge, private mosquitto, zero-latency OKAI simulator
over HTTP. One worker per device sends its commands one after the other (a device runs one command
at a time by contract), so ``devices`` commands are in flight. Floor: the bare MQTT echo plus the same
HTTP calls per command, with the same number in flight and the bridge's cap of vendor calls.

As in ``bench.latency``, bridge and floor are up together and measured in alternating rounds
(``per_device`` rounds of one command per device each; the floor first in every other round), and
each figure is its commands over the time its rounds took: a single series of a few seconds each
moved this ratio between 0.38 and 0.68 on the same build.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio

from bench.command import bridge, calls_per_command, commander, concurrent, floor, okai_stack, sequential
from bench.common import Report, private_broker
from bench.profiling import profiled


async def measure(devices: int, per_device: int, report: Report, profile: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="locktwin-tput-") as tmp, private_broker(Path(tmp)) as broker:
        async with okai_stack(broker.port, devices) as stack, bridge(stack) as runtime, commander(broker.port) as cmd:
            before = stack.app.counts.copy()
            await sequential(cmd.command, stack.devices, 20)
            calls = calls_per_command(before, stack.app.counts, 20, stack.sim.base_path)
            limit = int(runtime.engine.gate.ceiling)
            async with floor(stack, calls, limit) as fl:
                await concurrent(cmd.command, stack.devices, 1)  # warm-up
                await concurrent(fl.command, stack.devices, 1)
                took = {"bridge": 0.0, "floor": 0.0}
                for i in range(per_device):
                    series = [("floor", fl.command), ("bridge", cmd.command)]
                    for name, send in series if i % 2 == 0 else reversed(series):
                        took[name] += devices / await concurrent(send, stack.devices, 1)
            if profile:  # apart from the figures: the profiler slows what it watches
                with profiled("throughput", enabled=True):
                    await concurrent(cmd.command, stack.devices, per_device)
    commands = devices * per_device
    report.value("throughput: vendor calls in flight at most (bridge max_in_flight, floor too)", limit)
    report.ratio(
        f"throughput, {devices} in flight", commands / took["bridge"], commands / took["floor"], ">= 0.5", " cmd/s"
    )


async def main(devices: int, per_device: int, profile: bool) -> None:
    report = Report(name="throughput")
    await measure(devices, per_device, report, profile)
    report.write()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--per-device", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="write a pyinstrument profile to bench/results")
    args = parser.parse_args()
    anyio.run(main, args.devices, args.per_device, args.profile)
