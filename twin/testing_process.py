"""A real bridge process for tests that need one: ``python -m twin.cli run <targets>``.

:class:`BridgeProcess` runs on a broker, a data folder and a base topic of its own (so tests that
share a broker never meet), with a fixed MQTT client id, so that it can be stopped, killed with
SIGKILL (the broker then sends its last will) and started again on the same store and session::

    with BridgeProcess(broker_url=url, data_dir=tmp_path, vendor="fake", targets=[FAKE]) as bridge:
        ...  # started, and its bridge state is retained "online"

Its environment (``bridge.env``) is the one a ``locktwin`` CLI run needs to reach the same bridge.
Everything here is synchronous (subprocess, paho's own loop thread), for sync and async tests alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["ROOT", "BridgeProcess", "wait_retained"]

#: the repository (the processes' working directory and PYTHONPATH)
ROOT = Path(__file__).resolve().parent.parent


def wait_retained(broker_url: str, topic: str, value: bytes, *, timeout: float = 20.0) -> None:
    """Return once ``topic`` carries ``value`` (retained, or published meanwhile)."""
    parts = urlsplit(broker_url)
    arrived = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.payload == value:
            arrived.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        if not arrived.wait(timeout):
            raise TimeoutError(f"{topic} never became {value!r}")
    finally:
        client.loop_stop()
        client.disconnect()


class BridgeProcess:
    """``locktwin run`` of ``targets`` (vendor names or ``module:Class``; default ``vendor``).

    ``env`` adds to (and overrides) the environment the process gets; ``log_path``: its output is
    appended there (default: the test's own stdout and stderr). ``vendor`` names the bridge whose
    state topic says it is online.
    """

    def __init__(
        self,
        *,
        broker_url: str,
        data_dir: Path,
        vendor: str,
        targets: Sequence[str] | None = None,
        base: str | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.data_dir = data_dir
        self.vendor = vendor
        self.targets = tuple(targets or (vendor,))
        self.base = base or f"lt-proc-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "LOCKTWIN_MQTT__URL": broker_url,
            "LOCKTWIN_MQTT__CLIENT_ID": f"{self.base}-bridge",
            # tests restart brokers: come back within seconds, not the production 30 s
            "LOCKTWIN_MQTT__RECONNECT_MAX": "2",
            "LOCKTWIN_BASE_TOPIC": self.base,
            "LOCKTWIN_HOMEASSISTANT__PREFIX": f"{self.base}/homeassistant",
            "LOCKTWIN_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def state_topic(self) -> str:
        return f"{self.base}/bridge/{self.vendor}/state"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive()
        # this interpreter and the targets the test named: nothing from outside the test
        command = [sys.executable, "-m", "twin.cli", "run", *self.targets]
        if self.log_path is None:
            self.proc = subprocess.Popen(command, env=self.env, cwd=ROOT)  # noqa: S603
        else:
            with self.log_path.open("ab") as out:
                out.write(f"\n==== start {self.starts + 1} at {time.time():.3f}\n".encode())
                self.proc = subprocess.Popen(  # noqa: S603
                    command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
                )
        self.starts += 1

    def wait_online(self, *, timeout: float = 20.0) -> None:
        """Return once the bridge's state topic says ``online`` (raises, with its log, if it never does)."""
        try:
            wait_retained(self.broker_url, self.state_topic, b"online", timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"the bridge did not come online:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no clean stop, no goodbye on MQTT (the broker sends the last will)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def stop(self) -> int | None:
        """A clean stop (SIGTERM), a kill if it takes longer than 15 s; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> BridgeProcess:
        self.start()
        try:
            self.wait_online()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return "(its output went to the test's)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- what the running process holds
    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def store_path(self) -> Path:
        return self.data_dir / self.vendor / "twins.sqlite"
