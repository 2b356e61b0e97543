"""Brokers the project starts itself: a private mosquitto (tests, the demo), a private NATS server
with its MQTT listener (the broker matrix's tests), or amqtt (the demo on a machine without
mosquitto, in twin.demo).

Both processes are started like the tests' mosquitto always was: a configuration written into a
folder of their own, a free port on 127.0.0.1, ``start()`` returns once the MQTT port accepts
connections, ``restart()`` keeps the folder (persistence, retained messages, sessions).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["MosquittoBroker", "NatsBroker", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


class _BrokerProcess:
    """A broker process listening on ``port``; subclasses write its configuration."""

    name = "broker"

    def __init__(self, *, port: int | None, workdir: Path | None) -> None:
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._proc = subprocess.Popen(  # noqa: S603
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"{self.name} exited: {err}") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class MosquittoBroker(_BrokerProcess):
    """A private mosquitto process with a configuration of the test's choosing.

    ``extra_config`` is appended as it is: further listeners (a TLS one: ``listener``, ``cafile``,
    ``certfile``, ``keyfile``, ``require_certificate``), limits. mosquitto started as root drops to
    its own user before it reads certificate and key files, so they must be readable by that user.
    """

    name = "mosquitto"

    def __init__(self, *, port: int | None = None, extra_config: str = "", workdir: Path | None = None) -> None:
        super().__init__(port=port, workdir=workdir)
        self.extra_config = extra_config

    @staticmethod
    def available() -> bool:
        return _binary("mosquitto") is not None

    def _command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "max_queued_messages 0\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n" + self.extra_config
        )
        return [_binary("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)]


class NatsBroker(_BrokerProcess):
    """A private ``nats-server`` with JetStream and its MQTT listener on ``port``.

    NATS's MQTT listener needs JetStream (sessions and retained messages live in streams) and a
    ``server_name``. It speaks MQTT 3.1.1 only, refuses QoS 2, and (2.9.10, Debian's) refuses topics
    containing ``.`` or a space: see the broker matrix in README.md. ``mqtt_extra`` goes inside the
    ``mqtt { }`` block (a ``tls { }`` block, ``max_ack_pending``); the NATS client port is free too.
    """

    name = "nats-server"

    def __init__(self, *, port: int | None = None, mqtt_extra: str = "", workdir: Path | None = None) -> None:
        super().__init__(port=port, workdir=workdir)
        self.client_port = free_port()
        self.mqtt_extra = mqtt_extra
        self.server_name = f"locktwin-{uuid.uuid4().hex[:8]}"

    @staticmethod
    def available() -> bool:
        return _binary("nats-server") is not None

    def _command(self) -> list[str]:
        conf = self.workdir / "nats.conf"
        conf.write_text(
            f"server_name: {self.server_name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{\n  store_dir: "{self.workdir}/jetstream"\n  max_memory_store: 64MB\n'
            "  max_file_store: 256MB\n}\n"
            f"mqtt {{\n  listen: 127.0.0.1:{self.port}\n{self.mqtt_extra}\n}}\n"
        )
        return [_binary("nats-server") or "/usr/sbin/nats-server", "-c", str(conf)]
