"""A real bridge process (``locktwin run``) for tests that need one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    base: str
    env: dict[str, str]
    broker_url: str


def wait_retained(url: str, topic: str, value: bytes, timeout: float = 20.0) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    seen: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: seen.append(m.payload)
    client.connect(host, int(port))
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while value not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} never became {value!r}")
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()


@contextmanager
def bridge_process(
    broker_url: str,
    data_dir: Path,
    adapter: str = "tests.fake_adapter:FakeAdapter",
    vendor: str = "fake",
    extra_env: dict[str, str] | None = None,
) -> Iterator[BridgeProcess]:
    base = f"lt-proc-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "LOCKTWIN_MQTT__URL": broker_url,
        "LOCKTWIN_MQTT__CLIENT_ID": f"{base}-bridge",
        "LOCKTWIN_BASE_TOPIC": base,
        "LOCKTWIN_HOMEASSISTANT__PREFIX": f"{base}/homeassistant",
        "LOCKTWIN_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    proc = subprocess.Popen([sys.executable, "-m", "twin.cli", "run", adapter], env=env, cwd=ROOT)
    try:
        wait_retained(broker_url, f"{base}/bridge/{vendor}/state", b"online")
        yield BridgeProcess(proc=proc, base=base, env=env, broker_url=broker_url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
