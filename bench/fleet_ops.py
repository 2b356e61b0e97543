"""The fleet service: its index following a fleet, queries over 100,000 devices, a job's rollout.

    python -m bench.fleet_ops            # index of 100,000 over MQTT, job of 10,000 devices
    python -m bench.fleet_ops --quick    # index of 10,000 over MQTT, job of 2,000 devices

1. **Index**: the retained ``state`` and ``twin`` of N devices (rendered by the bridges' own
   renderers) are on a private mosquitto; a ``FleetService`` starts and follows them. Measured: time
   until all N are indexed, over the floor of a bare aiomqtt subscriber receiving the same messages
   on the same broker; resident memory per device (RSS before and after, in this process).
2. **Queries** over an index of 100,000 devices fed the same documents (in-process, both modes): p50
   and p99 of a filtered query returning 100 rows (``vendor=okai lock=UNLOCKED battery<30``, 100 of
   ~2,500 matches), over the goal of 20 ms; a few other shapes as values; and one query as an MQTT
   request/answer round trip.
3. **Job**: a bridge on the bench's fast adapter (``FastLocks``: the fleet adapter with lock
   states) and the fleet service in this process; the floor is the same /set commands (same
   transaction format, issued_at, expires_in, v5 response topic) sent by a bare client with the
   same pacer and in-flight limit (``twin.fleet.runner.Pacer``), waiting for every final answer.
   Floor first (unlock all), then the job (lock all), so each has the same work.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import aiomqtt
import anyio
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.command import NODELAY
from bench.common import Report, percentile, private_broker, rss_bytes
from bench.fleet_adapter import FleetAdapter, FleetSettings
from twin.adapter import CommandContext, DeviceInfo, ExecuteResult, ReportedPatch, lock_state
from twin.config import MqttSettings
from twin.document import render_state, render_twin
from twin.fleet.index import FleetIndex
from twin.fleet.runner import Pacer
from twin.fleet.search import Search
from twin.fleet.service import FleetService
from twin.fleet.settings import FleetSettings as ServiceSettings
from twin.homeassistant import HomeAssistantSettings
from twin.jsonenc import dumps
from twin.publisher import Publisher
from twin.runtime import BridgeRuntime
from twin.store import TwinRecord

GOAL_MS = 20.0
FILTERED = "vendor=okai lock=UNLOCKED battery<30"
VENDORS = ("okai", "segway", "tuya", "smartcar")


class FastLocks(FleetAdapter):
    """The bench's fleet adapter with a lock state per device: a lock or unlock is seen at once."""

    vendor: ClassVar[str] = "fast"
    confirm_interval: ClassVar[float] = 0.001
    max_in_flight: ClassVar[int] = 64

    def __init__(self, *, settings: FleetSettings) -> None:
        super().__init__(settings=settings)
        self.locked: dict[str, bool] = {}
        self.calls = 0

    async def list_devices(self) -> Sequence[DeviceInfo]:
        return [DeviceInfo(id=f"dev{i:06d}", capabilities=frozenset({"lock"})) for i in range(self.count)]

    async def read_status(self, device_id: str) -> ReportedPatch:
        locked = self.locked.get(device_id, True)
        return ReportedPatch(values={"lock": lock_state(locked=locked), "online": True}, observed_at=datetime.now(UTC))

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        self.calls += 1
        self.locked[device_id] = locked
        return ExecuteResult(reported=await self.read_status(device_id))


def documents(n: int, base: str, seed: int = 1) -> list[tuple[str, bytes]]:
    """Retained state and twin of n devices across four vendors, as the bridges render them."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        vendor = VENDORS[i % len(VENDORS)]
        device = f"{vendor[:2].upper()}{i:07d}"
        received = datetime.fromtimestamp(now - rng.uniform(0, 7200), UTC).isoformat()
        reported = {
            "lock": rng.choice(("LOCKED", "LOCKED", "LOCKED", "UNLOCKED")),
            "online": rng.random() > 0.05,
            "battery": float(rng.randint(0, 100)),
            "latitude": 52.3 + rng.random() * 0.15,
            "longitude": 4.8 + rng.random() * 0.2,
            "speed": 0.0,
            "remaining_distance_m": rng.randint(0, 40_000),
        }
        twin = TwinRecord(
            device=device,
            version=rng.randint(1, 50),
            reported=reported,
            metadata={k: {"observed_at": received, "received_at": received, "source": "poll"} for k in reported},
        )
        out.append((f"{base}/{vendor}/{device}/state", dumps(render_state(twin, None))))
        out.append((f"{base}/{vendor}/{device}/twin", dumps(render_twin(twin, None, hold=False))))
    return out


async def publish_retained(port: int, messages: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(window=64)
    async with publisher.prepare(
        aiomqtt.Client("127.0.0.1", port, socket_options=NODELAY, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}")
    ) as c:
        publisher.attach(c)
        for topic, payload in messages:
            publisher.send(topic, payload, retain=True)
        await publisher.drained()


async def bare_receive(port: int, base: str, expected: int) -> float:
    started = time.perf_counter()
    got = 0
    async with aiomqtt.Client(
        "127.0.0.1", port, socket_options=NODELAY, identifier=f"bench-bare-{uuid.uuid4().hex[:6]}"
    ) as client:
        await client.subscribe([(f"{base}/+/+/state", 1), (f"{base}/+/+/twin", 1)])
        async for _ in client.messages:
            got += 1
            if got >= expected:
                break
    return time.perf_counter() - started


def service(port: int, data: Path, base: str) -> FleetService:
    settings = ServiceSettings(
        http_port=0,
        settle_quiet=0.5,
        settle_max=600,
        client_id=f"bench-fleet-{uuid.uuid4().hex[:6]}",
        gbfs={"enabled": False},
    )
    return FleetService(
        settings=settings, mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}"), data_dir=data, base_topic=base
    )


async def index_following(report: Report, work: Path, devices: int) -> None:
    base = "bfleet"
    messages = documents(devices, base)
    with private_broker(work / "broker-index") as broker:
        await publish_retained(broker.port, messages)
        floor = min([await bare_receive(broker.port, base, len(messages)) for _ in range(2)])
        gc.collect()
        before = rss_bytes()
        fleet = service(broker.port, work / "fleet-index", base)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.run)
            with anyio.fail_after(600):  # the index announces no count: look every 50 ms
                while (  # noqa: ASYNC110
                    sum(1 for r in fleet.index.records.values() if r.has_state) < devices
                    or len(fleet.index.records) < devices
                ):
                    await anyio.sleep(0.05)
            elapsed = time.perf_counter() - started
            await fleet.ready.wait()
            gc.collect()
            per_device = (rss_bytes() - before) / devices
            rtts = []
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, socket_options=NODELAY, protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                reply = f"bench-replies/{uuid.uuid4().hex[:6]}"
                await client.subscribe(reply, qos=1)
                for n in range(50):
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.ResponseTopic, props.CorrelationData = reply, str(n).encode()
                    t0 = time.perf_counter()
                    await client.publish(
                        f"{base}/fleet/request/query",
                        json.dumps({"q": FILTERED, "limit": 100}),
                        qos=1,
                        properties=props,
                    )
                    async for _ in client.messages:
                        break
                    rtts.append((time.perf_counter() - t0) * 1000)
            tg.cancel_scope.cancel()
    report.ratio(f"index following {devices:,} devices over MQTT (state + twin each)", elapsed, floor, "<= 2", " s")
    report.value(f"process memory growth per device following {devices:,} (RSS)", round(per_device), " B")
    report.value(
        f"query over MQTT, request to answer, p50 ({devices:,} devices)", round(percentile(rtts, 50), 2), " ms"
    )


def query_times(report: Report, devices: int = 100_000) -> None:
    messages = documents(devices, "q")
    gc.collect()
    tracemalloc.start()
    index = FleetIndex()
    for topic, payload in messages:
        _, vendor, device, leaf = topic.split("/")
        doc = orjson.loads(payload)
        (index.apply_state if leaf == "state" else index.apply_twin)(vendor, device, doc)
    del doc
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report.value(f"index memory per device ({devices:,} devices, tracemalloc)", round(held / devices), " B")
    gc.freeze()  # as the service does once its index is loaded
    search = Search(index=index)
    shapes = {
        FILTERED: None,
        "vendor=okai lock=UNLOCKED battery<30 (sort -battery)": "-battery",
        "online=false age>1h": None,
        "near=4.9,52.37,500": None,
        "(all devices)": None,
    }
    for label, sort in shapes.items():
        text = label.split(" (")[0] if label != "(all devices)" else ""
        times = []
        for _ in range(15):  # warm up
            search.page(text, sort=sort, limit=100)
        for _ in range(200):
            page = search.page(text, sort=sort, limit=100)
            times.append(page.took_ms)
        p50, p99 = percentile(times, 50), percentile(times, 99)
        if label == FILTERED:
            assert len(page.rows) == 100, page.total
            report.ratio(
                f"query p50, `{FILTERED}` ({page.total:,} of {devices:,}, 100 rows)", p50, GOAL_MS, "<= 1", " ms"
            )
            report.ratio("same, p99", p99, GOAL_MS, "(informative)", " ms")
        else:
            report.value(f"query p50, `{label}` ({page.total:,} matches, 100 rows)", round(p50, 2), " ms")
            report.value("same, p99", round(p99, 2), " ms")


async def job(report: Report, work: Path, devices: int, rate: float, in_flight: int, rounds: int) -> None:
    base = "bjob"
    adapter = FastLocks(settings=FleetSettings(devices=devices))
    with private_broker(work / "broker-job") as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        bridge = BridgeRuntime(
            adapter=adapter,
            mqtt=MqttSettings(url=url, client_id="bench-job-bridge"),
            data_dir=work / "bridge",
            base_topic=base,
            homeassistant=HomeAssistantSettings(enabled=False),
        )
        fleet = service(broker.port, work / "fleet-job", base)
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge.run)
            with anyio.fail_after(120):
                await bridge.ready.wait()
                await bridge.connected.wait()
            tg.start_soon(fleet.run)
            with anyio.fail_after(120):
                await fleet.ready.wait()
                await fleet.connected.wait()
            ids = [f"dev{i:06d}" for i in range(devices)]
            floors, times = [], []
            for n in range(rounds):  # alternating with the floor, as this machine's speed drifts
                floors.append(await bare_commands(broker.port, base, ids, "UNLOCKED", rate, in_flight))
                with anyio.fail_after(120):  # the index has seen every device unlocked
                    while len(fleet.index.by_lock.get("UNLOCKED", ())) < devices:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                times.append(await fleet_job(broker.port, base, rate, in_flight, f"bench-job-{n}"))
            assert adapter.calls == 2 * rounds * devices, adapter.calls
            tg.cancel_scope.cancel()
    label = f"job of {devices:,} devices ({rate:g}/s, {in_flight} in flight), create to COMPLETED, median of {rounds}"
    report.ratio(label, statistics.median(times), statistics.median(floors), "<= 1.2", " s")


async def bare_commands(port: int, base: str, ids: list[str], value: str, rate: float, in_flight: int) -> float:
    """The floor: the same /set commands, same pacer and in-flight limit, every final answer awaited;
    published through the bridges' own ``Publisher`` (QoS 1, a window of PUBACKs), as the service does."""
    reply = f"bench-replies/bare-{uuid.uuid4().hex[:6]}"
    finals = anyio.Event()
    waiting: set[str] = set()
    slots = anyio.Semaphore(in_flight)
    publisher = Publisher(window=64)
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        identifier=f"bench-bare-{uuid.uuid4().hex[:6]}",
    )
    async with publisher.prepare(client), anyio.create_task_group() as tg:
        await client.subscribe(reply, qos=1)
        publisher.attach(client)

        async def listen() -> None:
            async for message in client.messages:
                doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if doc["status"] != "accepted" and doc["transaction"] in waiting:
                    waiting.discard(doc["transaction"])
                    slots.release()
                    if not waiting:
                        finals.set()

        tg.start_soon(listen)
        pacer = Pacer(rate)
        started = time.perf_counter()
        for device in ids:
            await slots.acquire()
            await pacer.wait()
            transaction = f"bare:{uuid.uuid4().hex[:12]}:{device}"
            waiting.add(transaction)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval, props.ResponseTopic = 60, reply
            props.CorrelationData = transaction.encode()
            body = {
                "lock": value,
                "transaction": transaction,
                "issued_at": datetime.now(UTC).isoformat(),
                "expires_in": 60,
            }
            publisher.send(f"{base}/fast/{device}/set", dumps(body), retain=False, properties=props)
        await finals.wait()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed


async def fleet_job(port: int, base: str, rate: float, in_flight: int, transaction: str) -> float:
    spec = {
        "transaction": transaction,
        "target": {"query": "vendor=fast"},
        "operation": {"kind": "set", "field": "lock", "value": "LOCKED"},
        "rollout": {"max_per_second": rate, "max_in_flight": in_flight},
        "execution_timeout": 60,
    }
    async with aiomqtt.Client(
        "127.0.0.1", port, socket_options=NODELAY, identifier=f"bench-job-{uuid.uuid4().hex[:6]}"
    ) as client:
        await client.subscribe(f"{base}/fleet/response/job_create", qos=1)
        await client.subscribe(f"{base}/fleet/jobs/+", qos=1)
        started = time.perf_counter()
        await client.publish(f"{base}/fleet/request/job_create", json.dumps(spec), qos=1)
        job_id = None
        async for message in client.messages:
            doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            if message.topic.value.endswith("/job_create"):
                assert doc["status"] == "succeeded", doc
                job_id = doc["data"]["id"]
            elif job_id is not None and doc.get("id") == job_id and doc["status"] in ("COMPLETED", "ABORTED"):
                assert doc["status"] == "COMPLETED" and doc["counts"]["SUCCEEDED"] == doc["total"], doc
                return time.perf_counter() - started
    raise RuntimeError("the job never completed")


async def main(quick: bool) -> Report:
    report = Report(name="fleet_ops")
    work = Path(tempfile.mkdtemp(prefix="locktwin-fleet-ops-"))
    try:
        await index_following(report, work, 10_000 if quick else 100_000)
        query_times(report)
        gc.unfreeze()
        await job(report, work, 2_000 if quick else 10_000, rate=1000.0, in_flight=100, rounds=3 if quick else 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.write()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_ops", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="index of 10,000 over MQTT, job of 2,000")
    args = parser.parse_args()
    anyio.run(main, args.quick)


if __name__ == "__main__":
    cli()
