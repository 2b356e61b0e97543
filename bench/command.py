"""What the command benchmarks share: the OKAI simulator over HTTP, a bridge, a /set client, the floor.

The bridge runs **in-process** (``BridgeRuntime`` in this event loop), for two reasons: the floor's echo
responder and HTTP client run in this process too, so both sides pay for one Python process's CPU
and event loop (a subprocess bridge would get a core of its own that its floor does not get), and the
profiler (``--profile``) sees the bridge's hot paths directly. The load generator shares that loop
with the bridge in both cases.

Floor of one command: one bare MQTT request/response (an aiomqtt echo responder on the same broker,
QoS 1, TCP_NODELAY) whose responder makes, before answering, the same HTTP calls the bridge made per
command (counted in the warm-up by a counting wrapper around the simulator's ASGI app) with the
same client class the adapter uses (``OkaiClient``: same signing, same HTTP transport), to the same
simulator, under the same cap of vendor calls in flight as the bridge (``max_in_flight``).
"""

from __future__ import annotations

import gc
import json
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
import anyio
from starlette.types import Receive, Scope, Send

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import PATHS, OkaiClient
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import DEMO_SIGN_KEY, DEMO_USER_KEY, OkaiSimulator
from twin.asgi import serve_asgi
from twin.config import MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.publisher import Publisher
from twin.runtime import BridgeRuntime

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class BenchOkaiAdapter(OkaiAdapter):
    """OKAI with a tiny first confirmation delay: the zero-latency scooter has moved at once.

    A sleep this short lasts a whole millisecond when the event loop has nothing else to do (epoll's
    timeout is in milliseconds). Here the loop is busy with the command's messages at that point
    (CPU time per command equals its latency); a bridge that published less would need 0 here.
    """

    confirm_interval: ClassVar[float] = 0.0001


class CountingApp:
    """Counts HTTP requests per path in front of an ASGI app (the simulator's own recording is off)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counts[scope["path"]] += 1
        await self.app(scope, receive, send)


@dataclass
class Stack:
    port: int
    sim: OkaiSimulator
    app: CountingApp
    base_url: str
    work: Path
    devices: list[str] = field(default_factory=list)

    def settings(self) -> OkaiSettings:
        return OkaiSettings(
            user_key=DEMO_USER_KEY,
            sign_key=DEMO_SIGN_KEY,
            base_url=self.base_url,
            devices=self.devices,
            poll_interval=None,
        )


@asynccontextmanager
async def okai_stack(port: int, devices: int) -> AsyncIterator[Stack]:
    sim = OkaiSimulator(
        user_key=DEMO_USER_KEY,
        sign_key=DEMO_SIGN_KEY,
        devices=devices,
        bolt_seconds=0,
        delivery_seconds=0,
        record_calls=False,
    )
    app = CountingApp(sim.app)
    work = Path(tempfile.mkdtemp(prefix="locktwin-cmd-"))
    try:
        async with serve_asgi(app) as served:
            yield Stack(port, sim, app, served.url + sim.base_path, work, list(sim.fleet.imeis))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@asynccontextmanager
async def bridge(stack: Stack) -> AsyncIterator[BridgeRuntime]:
    runtime = BridgeRuntime(
        adapter=BenchOkaiAdapter(settings=stack.settings()),
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{stack.port}", client_id=f"bench-{uuid.uuid4().hex[:6]}"),
        data_dir=stack.work / f"data-{uuid.uuid4().hex[:6]}",
        homeassistant=HomeAssistantSettings(enabled=False),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.run)
        with anyio.fail_after(30):
            await runtime.ready.wait()
            await runtime.connected.wait()
        gc.freeze()  # as `locktwin run` does once its bridges are up
        try:
            yield runtime
        finally:
            tg.cancel_scope.cancel()


class Commander:
    """Sends ``/set`` and waits for the final answer of that transaction."""

    def __init__(self, client: aiomqtt.Client, prefix: str = "locktwin/okai") -> None:
        self.client = client
        self.prefix = prefix
        self.waiting: dict[str, anyio.Event] = {}
        self.finals: dict[str, str] = {}
        self.seen: dict[str, list[str]] = {}

    async def listen(self) -> None:
        async for message in self.client.messages:
            answer = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            tx = answer.get("transaction")
            self.seen.setdefault(tx, []).append(answer.get("status"))
            if answer.get("status") in ("succeeded", "failed", "expired", "superseded", "rejected"):
                self.finals[tx] = answer["status"]
                event = self.waiting.pop(tx, None)
                if event is not None:
                    event.set()

    async def command(self, device: str, locked: bool) -> str:
        tx = uuid.uuid4().hex
        event = anyio.Event()
        self.waiting[tx] = event
        body = json.dumps({"lock": "LOCKED" if locked else "UNLOCKED", "transaction": tx, "expires_in": 60})
        await self.client.publish(f"{self.prefix}/{device}/set", body, qos=1)
        with anyio.move_on_after(60):
            await event.wait()
        answers = self.seen.pop(tx, [])
        if tx not in self.finals:
            raise RuntimeError(f"no final answer for {device} within 60 s (answers: {answers})")
        status = self.finals.pop(tx)
        if status != "succeeded":
            raise RuntimeError(f"command on {device} ended {status}")
        return status


@asynccontextmanager
async def commander(port: int, prefix: str = "locktwin/okai", **auth: Any) -> AsyncIterator[Commander]:
    async with aiomqtt.Client(
        "127.0.0.1", port, socket_options=NODELAY, max_queued_incoming_messages=0, **auth
    ) as client:
        client.pending_calls_threshold = 1000
        await client.subscribe(f"{prefix}/+/response/set", qos=1)
        cmd = Commander(client, prefix)
        async with anyio.create_task_group() as tg:
            tg.start_soon(cmd.listen)
            try:
                yield cmd
            finally:
                tg.cancel_scope.cancel()


class Floor:
    """The bare MQTT request/response plus the bridge's HTTP calls per command, same broker and simulator."""

    def __init__(
        self, client: aiomqtt.Client, publisher: Publisher, okai: OkaiClient, calls: list[str], limit: int
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.okai = okai
        self.calls = calls
        self.limiter = anyio.CapacityLimiter(limit)
        self.waiting: dict[str, anyio.Event] = {}

    async def _vendor(self, device: str) -> None:
        for path in self.calls:
            async with self.limiter:
                if path == PATHS["switch_lock"]:
                    await self.okai.switch_lock(device, operate="lock", expire_time=30)
                else:
                    await self.okai.status(device)

    async def serve(self) -> None:
        async with anyio.create_task_group() as tg:
            async for message in self.client.messages:
                topic = message.topic.value
                if topic.startswith("floor/req/"):
                    tg.start_soon(self._answer, topic.removeprefix("floor/req/"), bytes(message.payload))  # type: ignore[arg-type]
                else:
                    event = self.waiting.pop(bytes(message.payload).decode(), None)  # type: ignore[arg-type]
                    if event is not None:
                        event.set()

    async def _answer(self, device: str, payload: bytes) -> None:
        await self._vendor(device)
        self.publisher.send(f"floor/resp/{device}", payload, retain=False)  # the bridge's publisher

    async def command(self, device: str, locked: bool) -> str:
        tx = uuid.uuid4().hex
        event = anyio.Event()
        self.waiting[tx] = event
        await self.client.publish(f"floor/req/{device}", tx, qos=1)
        with anyio.fail_after(60):
            await event.wait()
        return "succeeded"


@asynccontextmanager
async def floor(stack: Stack, calls: list[str], limit: int) -> AsyncIterator[Floor]:
    okai = OkaiClient(settings=stack.settings())
    await okai.open()
    try:
        publisher = Publisher()
        client = publisher.prepare(
            aiomqtt.Client("127.0.0.1", stack.port, socket_options=NODELAY, max_queued_incoming_messages=0)
        )
        async with client:
            client.pending_calls_threshold = 1000
            await client.subscribe([("floor/req/+", 1), ("floor/resp/+", 1)])
            publisher.attach(client)
            fl = Floor(client, publisher, okai, calls, limit)
            async with anyio.create_task_group() as tg:
                tg.start_soon(fl.serve)
                try:
                    yield fl
                finally:
                    tg.cancel_scope.cancel()
    finally:
        await okai.aclose()


def calls_per_command(before: Counter[str], after: Counter[str], commands: int, base_path: str) -> list[str]:
    """The HTTP calls of one command, rounded from a warm-up: switchLock first, then status reads."""
    delta = {p.removeprefix(base_path): after[p] - before.get(p, 0) for p in after}
    switch = round(delta.get(PATHS["switch_lock"], 0) / commands)
    status = round(delta.get(PATHS["status"], 0) / commands)
    return [PATHS["switch_lock"]] * max(1, switch) + [PATHS["status"]] * status


Send_ = Callable[[str, bool], Awaitable[str]]


async def sequential(send: Send_, devices: list[str], count: int) -> list[float]:
    """``count`` commands one at a time, cycling devices and alternating lock/unlock; latencies in s."""
    latencies: list[float] = []
    state: dict[str, bool] = {}
    for i in range(count):
        device = devices[i % len(devices)]
        locked = not state.get(device, True)
        state[device] = locked
        started = time.perf_counter()
        await send(device, locked)
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(send: Send_, devices: list[str], per_device: int) -> float:
    """One worker per device, each sending ``per_device`` commands in turn; returns commands/s."""

    async def worker(device: str, start_locked: bool) -> None:
        locked = start_locked
        for _ in range(per_device):
            locked = not locked
            await send(device, locked)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i, device in enumerate(devices):
            tg.start_soon(worker, device, bool(i % 2))
    return len(devices) * per_device / (time.perf_counter() - started)
