"""Fleet size: republishing every retained topic at start, memory and store size per device.

    python -m bench.fleet --devices 100000

Floor: the same retained messages (captured from the bridge) published by a bare aiomqtt client with
the same number of publishes in flight, to the same broker, in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import aiomqtt
import anyio

from bench.common import Report, private_broker, rss_bytes
from bench.fleet_adapter import FleetAdapter, FleetSettings
from twin.config import MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.runtime import PUBLISH_WORKERS, BridgeRuntime


async def _collect(
    url_port: int, pattern: str, expected: int, sink: list[tuple[str, bytes]], done: anyio.Event
) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port, max_queued_incoming_messages=0) as client:
        await client.subscribe(pattern, qos=1)
        async for message in client.messages:
            sink.append((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]
            if len(sink) >= expected:
                done.set()


async def bridge_start(port: int, data: Path, devices: int) -> tuple[float, list[tuple[str, bytes]], int]:
    expected = devices * 2 + 1  # state and twin per device, the devices list
    seen: list[tuple[str, bytes]] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_collect, port, "fleet/fleet/#", expected, seen, done)
        tg.start_soon(_collect, port, "fleet/bridge/fleet/devices", 1, seen, anyio.Event())
        await anyio.sleep(0.5)
        rss0 = rss_bytes()
        runtime = BridgeRuntime(
            adapter=FleetAdapter(settings=FleetSettings(devices=devices)),
            mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}"),
            data_dir=data,
            base_topic="fleet",
            homeassistant=HomeAssistantSettings(enabled=False),
        )
        started = time.perf_counter()
        tg.start_soon(runtime.run)
        with anyio.fail_after(600):
            await done.wait()
        elapsed = time.perf_counter() - started
        rss = rss_bytes() - rss0
        tg.cancel_scope.cancel()
    return elapsed, seen, rss


async def bare_publish(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish the same retained messages under another prefix, PUBLISH_WORKERS in flight."""
    expected = len(messages)
    seen: list[tuple[str, bytes]] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_collect, port, "floor/#", expected, seen, done)
        await anyio.sleep(0.5)
        async with aiomqtt.Client("127.0.0.1", port) as client:
            client.pending_calls_threshold = PUBLISH_WORKERS * 2
            send, receive = anyio.create_memory_object_stream[tuple[str, bytes]](len(messages))

            async def worker() -> None:  # the same pool design as the bridge's publishers
                async for topic, payload in receive:
                    await client.publish("floor/" + topic, payload, qos=1, retain=True)

            started = time.perf_counter()
            async with anyio.create_task_group() as pubs:
                for _ in range(PUBLISH_WORKERS):
                    pubs.start_soon(worker)
                for message in messages:
                    send.send_nowait(message)
                send.close()
            with anyio.fail_after(600):
                await done.wait()
            elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed


def store_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


async def main(devices: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="locktwin-fleet-"))
    report = Report(name="fleet")
    try:
        with private_broker(work / "broker") as broker:
            elapsed, seen, rss = await bridge_start(broker.port, work / "data", devices)
            messages = [(t, p) for t, p in seen]
            floor = await bare_publish(broker.port, messages)
            report.ratio(f"republish {len(messages)} retained topics of {devices} devices", elapsed, floor, "<= 2", "s")
            report.value("resident memory per device", rss / devices, " B")
            report.value("store bytes per device", store_size(work / "data" / "fleet" / "twins.sqlite") / devices, " B")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    anyio.run(main, parser.parse_args().devices)
