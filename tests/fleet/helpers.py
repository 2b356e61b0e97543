"""What the fleet service's tests share: the service in-process or as a process, a probe that sends
requests and records everything under ``{base}/fleet/``, bridges on the fake adapter or on a
vendor's simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from pydantic import BaseModel

from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.adapter import Adapter, DeviceInfo
from twin.asgi import serve_asgi
from twin.config import BridgeOptions, MqttSettings, load_vendor_settings
from twin.fleet.clock import Clock
from twin.fleet.service import FleetService
from twin.fleet.settings import FleetSettings
from twin.shard import Shard
from twin.testing import BridgeHarness, v5_reply

ROOT = Path(__file__).resolve().parents[2]
FINAL_JOB = {"COMPLETED", "CANCELED", "ABORTED"}


class PolledFake(FakeAdapter):
    """The fake vendor with devices polled every ``POLL`` seconds (positions and drift show up)."""

    POLL = 0.3

    async def list_devices(self) -> Sequence[DeviceInfo]:
        caps = frozenset({"lock", "find", "codes"})
        return [DeviceInfo(id=d, name=f"Fake {d}", capabilities=caps, poll_interval=self.POLL) for d in self.locks]


def fake_bridge(
    broker_url: str,
    data_dir: Path,
    base: str,
    devices: Sequence[str],
    *,
    adapter: FakeAdapter | None = None,
    options: BridgeOptions | None = None,
    shard: Shard | None = None,
) -> BridgeHarness:
    return BridgeHarness(
        adapter=adapter or PolledFake(settings=FakeSettings(devices=list(devices))),
        broker_url=broker_url,
        data_dir=data_dir,
        base_topic=base,
        options=options,
        shard=shard,
    )


@asynccontextmanager
async def served_simulator(cls: type[Adapter[Any]], *, devices: int) -> AsyncIterator[tuple[Any, str]]:
    """A vendor's simulator (``Adapter.simulator``) served over real HTTP: (kit, base url)."""
    kit = cls.simulator(devices=devices)
    assert kit is not None
    async with serve_asgi(kit.app) as served:
        yield kit, served.url


def simulator_bridge(
    cls: type[Adapter[Any]],
    kit: Any,
    url: str,
    broker_url: str,
    data_dir: Path,
    base: str,
    *,
    shard: Shard | None = None,
    **settings: Any,
) -> BridgeHarness:
    """A bridge of ``cls`` on a served simulator, polling every half second."""
    table = {**kit.settings(url), "poll_interval": 0.5, **settings}
    adapter_settings: BaseModel = load_vendor_settings(cls.settings_model, table)
    return BridgeHarness(
        adapter=cls(settings=adapter_settings), broker_url=broker_url, data_dir=data_dir, base_topic=base, shard=shard
    )


class FleetProbe:
    """Requests to the fleet service (MQTT v5, with a response topic) and a record of ``{base}/fleet/#``."""

    def __init__(self, broker_url: str, base: str) -> None:
        self.mqtt = MqttSettings(url=broker_url)
        self.base = base
        self.messages: list[tuple[str, bytes, bool]] = []
        self.retained: dict[str, bytes] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        #: answers on the reply topic by their correlation data
        self.correlated: dict[bytes, dict[str, Any]] = {}
        self._changed = anyio.Event()
        self.reply = f"{base}-replies/probe-{uuid.uuid4().hex[:6]}"
        self._client: aiomqtt.Client | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FleetProbe]:
        async with (
            aiomqtt.Client(
                self.mqtt.host,
                self.mqtt.port,
                protocol=aiomqtt.ProtocolVersion.V5,
                identifier=f"probe-{uuid.uuid4().hex[:8]}",
            ) as client,
            anyio.create_task_group() as tg,
        ):
            await client.subscribe(f"{self.base}/fleet/#", qos=1)
            await client.subscribe(self.reply, qos=1)
            self._client = client
            tg.start_soon(self._listen, client)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            topic = message.topic.value
            self.messages.append((topic, payload, bool(message.retain)))
            self.retained[topic] = payload
            if topic == self.reply or "/fleet/response/" in topic:
                doc = json.loads(payload)
                if doc.get("transaction"):
                    self.answers[doc["transaction"]] = doc
                correlation = getattr(message.properties, "CorrelationData", None)
                if topic == self.reply and correlation:
                    self.correlated[bytes(correlation)] = doc
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 20.0) -> Any:
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def publish(self, topic: str, payload: bytes | str, *, properties: Any = None, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, properties=properties, retain=retain)

    async def request(
        self, op: str, body: dict[str, Any] | None = None, *, raw: bytes | None = None, timeout: float = 20.0
    ) -> dict[str, Any]:
        transaction = f"probe-{uuid.uuid4().hex[:10]}"
        payload = raw if raw is not None else json.dumps({"transaction": transaction, **(body or {})}).encode()
        correlation = transaction.encode()
        await self.publish(f"{self.base}/fleet/request/{op}", payload, properties=v5_reply(self.reply, correlation))
        result: dict[str, Any] = await self.wait_for(lambda: self.correlated.get(correlation), timeout=timeout)
        return result

    def job(self, job_id: str) -> dict[str, Any] | None:
        raw = self.retained.get(f"{self.base}/fleet/jobs/{job_id}")
        return json.loads(raw) if raw else None

    async def wait_job(
        self, job_id: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            doc = self.job(job_id)
            return doc if doc is not None and predicate(doc) else None

        result: dict[str, Any] = await self.wait_for(check, timeout=timeout)
        return result

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages if t == topic]


def fleet_settings(base: str, **overrides: Any) -> FleetSettings:
    values: dict[str, Any] = {
        "http_port": 0,
        "settle_quiet": 0.3,
        "answer_grace": 2.0,
        "client_id": f"{base}-fleet",
        "rule_retry": 2.0,
    }
    values.update(overrides)
    return FleetSettings(**values)


@asynccontextmanager
async def running_fleet(
    broker_url: str, data_dir: Path, base: str, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[tuple[FleetService, FleetProbe]]:
    """The fleet service in this event loop, and a probe connected before it."""
    service = FleetService(
        settings=fleet_settings(base, **overrides),
        mqtt=MqttSettings(url=broker_url),
        data_dir=data_dir,
        base_topic=base,
        clock=clock,
    )
    probe = FleetProbe(broker_url, base)
    async with probe.running(), anyio.create_task_group() as tg:
        tg.start_soon(service.run)
        with anyio.fail_after(20):
            await service.ready.wait()
            await service.connected.wait()
        try:
            yield service, probe
        finally:
            tg.cancel_scope.cancel()


class FleetProcess:
    """``locktwin fleet`` as a process of its own (to kill with SIGKILL and start again)."""

    def __init__(self, broker_url: str, data_dir: Path, base: str, log_path: Path) -> None:
        self.env = {
            **os.environ,
            "LOCKTWIN_MQTT__URL": broker_url,
            "LOCKTWIN_BASE_TOPIC": base,
            "LOCKTWIN_DATA_DIR": str(data_dir),
            "LOCKTWIN_FLEET__HTTP_PORT": "0",
            "LOCKTWIN_FLEET__CLIENT_ID": f"{base}-fleet",
            "LOCKTWIN_FLEET__SETTLE_QUIET": "0.3",
            "LOCKTWIN_FLEET__ANSWER_GRACE": "2",
            "PYTHONPATH": str(ROOT),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twin.cli", "fleet"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cli(broker_url: str, base: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKTWIN_MQTT__URL": broker_url, "LOCKTWIN_BASE_TOPIC": base, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", "fleet", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def eventually(check: Callable[[], Any], *, timeout: float = 10.0, step: float = 0.1) -> None:
    """Until ``check()`` (a coroutine function or a plain one) is true: for what no event announces
    (an answer of the service to a repeated query, a vendor call in another task)."""
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await anyio.sleep(step)
