"""A bridge process's resident memory per device, once the broker acknowledged its whole republish.

    python -m bench.fleet_memory --port PORT --devices 100000 --data DIR   (bench.fleet runs it on its
    private broker; the bridge leaves its retained topics under `fleet-memory/` there)

A process of its own, with nothing else in it: in the fleet benchmark's process the subscriber
that times the republish keeps a copy of every retained message (the floor republishes them), ~1 KB
per device that was counted as the bridge's. Prints one JSON object: RSS before the bridge loads
its devices (modules imported, runtime built) and after.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import anyio

from bench.common import rss_bytes
from bench.fleet import FastConfirmFleet, _runtime
from bench.fleet_adapter import FleetSettings


async def main(port: int, devices: int, data: Path) -> None:
    runtime = _runtime(FastConfirmFleet(settings=FleetSettings(devices=devices)), port, data, "fleet-memory")
    gc.collect()
    before = rss_bytes()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.run)
        with anyio.fail_after(600):
            await runtime.connected.wait()
            await runtime.publisher.drained()
        after = rss_bytes()
        tg.cancel_scope.cancel()
    print(json.dumps({"devices": devices, "rss_before": before, "rss_after": after}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    anyio.run(main, args.port, args.devices, args.data)
