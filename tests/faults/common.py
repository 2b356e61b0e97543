"""Shared pieces of the fault suite: a real ``locktwin run`` process of OKAI (a
:class:`~twin.testing_process.BridgeProcess`, which can be killed and started again on the same
store), an MQTT client that behaves like the documented client, and readers for the store, the
process's descriptors and the metrics endpoint.

Everything runs in the test's event loop (the vendor simulator is served there too, so it outlives
every bridge it serves); nothing here blocks the loop for long.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import httpx
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridges.okai.simulator import DEMO_USER_KEY
from twin.testing import json_or_text
from twin.testing_process import ROOT, BridgeProcess

__all__ = [
    "FINAL",
    "ROOT",  # the repository, for the fault tests that run locktwin themselves
    "Answers",
    "BridgeProcess",
    "Client",
    "Sent",
    "fd_kinds",
    "log",
    "metric_sum",
    "okai_bridge",
    "read_store",
    "scrape",
    "start_bridge",
]

FINAL = frozenset({"succeeded", "failed", "expired", "superseded", "rejected"})


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the bridge process ------------------------------------------------------------------------------


def okai_bridge(
    *, broker_url: str, base: str, base_url: str, imeis: list[str], workdir: Path, **env: str
) -> BridgeProcess:
    """``locktwin run okai`` on an OKAI simulator's demo account; store and log in ``workdir``."""
    return BridgeProcess(
        vendor="okai",
        broker_url=broker_url,
        data_dir=workdir / "data",
        base=base,
        env={
            "LOCKTWIN_OKAI_USER_KEY": DEMO_USER_KEY,
            "LOCKTWIN_OKAI_BASE_URL": base_url,
            "LOCKTWIN_OKAI_DEVICES": json.dumps(imeis),
            "LOCKTWIN_OKAI_TIMEOUT": "5",
            "LOCKTWIN_OKAI_POLL_INTERVAL": "30",
            **env,
        },
        log_path=workdir / "bridge.log",
    )


# -- the client --------------------------------------------------------------------------------------


@dataclass
class Sent:
    device: str
    transaction: str
    payload: bytes
    first_sent: float
    last_sent: float
    sends: int = 1
    expires_at_hint: float | None = None  # issued_at + expires_in when issued_at was given


@dataclass
class Answers:
    statuses: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finals(self) -> set[str]:
        return {s for s in self.statuses if s in FINAL}

    @property
    def answered(self) -> bool:
        return bool(self.statuses)


class Client:
    """The documented client over MQTT v5 with a persistent session: it records every answer and
    retained topic under the base topic, sends commands, and re-sends a command (same transaction)
    that got no answer within ``resend_after`` seconds. It reconnects and re-subscribes on its own."""

    def __init__(self, *, broker_url: str, base: str, vendor: str, resend_after: float = 3.0) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.host, self.port = host, int(port)
        self.base = base
        self.vendor = vendor
        self.resend_after = resend_after
        self.client_id = f"{base}-client-{uuid.uuid4().hex[:6]}"
        self.sent: dict[str, Sent] = {}
        self.answers: dict[str, Answers] = defaultdict(Answers)
        self.retained: dict[str, bytes] = {}
        self.bridge_states: list[bytes] = []
        #: every answer in arrival order: (topic, body), with or without a transaction
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.connections = 0
        self.resends = 0
        self.resending = True
        self._client: aiomqtt.Client | None = None
        self._changed = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                ) as client:
                    await client.subscribe(f"{self.base}/#", qos=1)
                    self._client = client
                    self.connections += 1
                    if not started:
                        started = True
                        task_status.started()
                    async for msg in client.messages:
                        self._record(msg)
            except aiomqtt.MqttError:
                self._client = None
                await anyio.sleep(0.2)

    def _record(self, msg: aiomqtt.Message) -> None:
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload or "").encode()
        if msg.retain or topic.endswith(("/state", "/twin", "/availability", "/health", "/partitions")):
            self.retained[topic] = payload
        if topic == f"{self.base}/bridge/{self.vendor}/state":
            self.bridge_states.append(payload)
        if "/response/" in topic:
            try:
                body = json.loads(payload)
            except ValueError:
                body = {}
            self.responses.append((topic, body))
            txn = body.get("transaction")
            if isinstance(txn, str):
                self.answers[txn].statuses.append(str(body.get("status")))
                self.answers[txn].bodies.append(body)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float) -> Any:
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                with anyio.move_on_after(0.5):
                    await self._changed.wait()
            return result

    async def publish(self, topic: str, payload: bytes) -> None:
        while True:
            while self._client is None:  # noqa: ASYNC110 - reconnecting
                await anyio.sleep(0.05)
            try:
                await self._client.publish(topic, payload, qos=1, timeout=10)
                return
            except aiomqtt.MqttError:
                await anyio.sleep(0.1)

    def topic(self, device: str, leaf: str) -> str:
        return f"{self.base}/{self.vendor}/{device}/{leaf}"

    async def send_set(
        self,
        device: str,
        lock: str,
        *,
        expires_in: float,
        issued_at: bool = False,
        transaction: str | None = None,
    ) -> str:
        txn = transaction or f"t-{uuid.uuid4().hex[:16]}"
        body: dict[str, Any] = {"lock": lock, "transaction": txn, "expires_in": round(expires_in, 3)}
        now = time.time()
        hint = None
        if issued_at:
            body["issued_at"] = datetime.fromtimestamp(now, UTC).isoformat()
            hint = now + expires_in
        payload = json.dumps(body).encode()
        self.sent[txn] = Sent(device, txn, payload, now, now, expires_at_hint=hint)
        await self.publish(self.topic(device, "set"), payload)
        return txn

    async def resender(self) -> None:
        """Re-send, with the same transaction, what got no answer at all within ``resend_after``."""
        while True:
            await anyio.sleep(0.5)
            if not self.resending:
                continue
            now = time.time()
            for sent in list(self.sent.values()):
                if self.answers[sent.transaction].answered or now - sent.last_sent < self.resend_after:
                    continue
                sent.last_sent = now
                sent.sends += 1
                self.resends += 1
                await self.publish(self.topic(sent.device, "set"), sent.payload)

    def unfinished(self) -> list[str]:
        return [t for t in self.sent if not self.answers[t].finals]

    async def wait_bridge(self, state: bytes, *, after: int, timeout: float = 30.0) -> None:
        """Wait for ``state`` on the bridge's state topic among messages after index ``after``."""
        await self.wait_for(lambda: state in self.bridge_states[after:], timeout=timeout)

    def retained_json(self, device: str, leaf: str) -> Any:
        raw = self.retained.get(self.topic(device, leaf))
        return None if raw is None else json_or_text(raw)


async def start_bridge(bridge: BridgeProcess, client: Client, *, timeout: float = 30.0) -> None:
    """Start ``bridge`` and wait, through ``client``, until it says it is online (again)."""
    mark = len(client.bridge_states)
    bridge.start()
    try:
        await client.wait_bridge(b"online", after=mark, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"bridge did not come online:\n{bridge.log_tail()}") from None


# -- the store ---------------------------------------------------------------------------------------


def read_store(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(commands by id, journal rows) of a stopped bridge's store."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        commands = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM commands")}
        journal = [dict(r) for r in conn.execute("SELECT * FROM journal ORDER BY seq")]
    finally:
        conn.close()
    return commands, journal


# -- metrics -----------------------------------------------------------------------------------------


async def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        if not key.startswith(name + "{") and key != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of ``pid`` by kind: files, pipes, listening sockets, TCP connections by peer port."""
    inodes: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
            if state == "0A":
                inodes[inode] = f"listen:{int(local.rsplit(':', 1)[1], 16)}"
            else:
                inodes[inode] = f"tcp->{int(remote.rsplit(':', 1)[1], 16)}"
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            kind = inodes.get(target[8:-1], "socket")
        elif target.startswith(("pipe:", "anon_inode:")):
            kind = target.split(":")[0] + (":" + target.split("[")[-1].rstrip("]") if "anon" in target else "")
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds
