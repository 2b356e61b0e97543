"""Brokers the project starts itself: a private mosquitto (tests, the demo), a private NATS server
or RabbitMQ node with its MQTT listener (the broker matrix's tests), or amqtt (the demo on a
machine without mosquitto, in twin.demo).

Each process is started like the tests' mosquitto always was: a configuration written into a
folder of its own, a free port on 127.0.0.1, ``start()`` returns once the MQTT port accepts
connections, ``restart()`` keeps the folder (persistence, retained messages, sessions). None of
them touches a broker already running on the machine: other ports, other data, another node name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from twin.files import private_folder, write_private

__all__ = ["MosquittoBroker", "NatsBroker", "RabbitMqBroker", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


class _BrokerProcess:
    """A broker process listening on ``port``; subclasses write its configuration."""

    name = "broker"
    #: seconds start() waits for the MQTT port
    start_timeout = 10.0
    #: the process starts children of its own (stopped with it, as a process group)
    process_group = False
    #: a session of its own: Ctrl-C in a terminal signals the whole foreground process group, and a
    #: broker must outlive the bridges' goodbyes (its owner stops it last)
    own_session = True

    def __init__(self, *, port: int | None, workdir: Path | None) -> None:
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str] | None:
        return None

    @property
    def log_path(self) -> Path:
        """Where the process writes what it says (its log, its errors)."""
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        command = self._command()
        # A file, not a pipe: nobody reads a pipe while the broker runs, and once its 64 KiB are full
        # (mosquitto's notices of ~370 connections) the broker blocks writing, mid test session.
        with open(self.log_path, "ab", opener=_private) as log:
            self._proc = subprocess.Popen(  # noqa: S603
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=self.process_group or self.own_session,
                umask=0o077,  # what it writes (a persistence file: retained messages, queued commands) 0600
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self._proc.poll() is not None:
                    said = self.log_path.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"{self.name} exited: {said}") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def _signal(self, signum: int) -> None:
        assert self._proc is not None
        if self.process_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signum)
        else:
            self._proc.send_signal(signum)

    def stop(self) -> None:
        if self._proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15 if self.process_group else 5)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
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
        private_folder(self.workdir)  # the demo's is under its data folder: its messages are the bridges'
        write_private(
            conf,
            (
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                "set_tcp_nodelay true\n"
                "max_queued_messages 0\n"
                "persistence true\n"
                f"persistence_location {self.workdir}/\n" + self.extra_config
            ).encode(),
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


class RabbitMqBroker(_BrokerProcess):
    """A private RabbitMQ node with its MQTT plugin listening on ``port``.

    A node of its own (name ``locktwin-<hex>@localhost``, its own Erlang cookie, data, logs and
    configuration under ``workdir``, no AMQP listener, the distribution port free too) beside any
    RabbitMQ already running: it shares only the machine's epmd, as every node on a host does.
    Starting takes ~10 s on two cores. RabbitMQ 3.10's MQTT plugin speaks 3.1.1 only, sends
    retained messages only to subscriptions without wildcards, and turns a ``.`` in a topic into
    ``/`` for subscribers: see the broker matrix in README.md.
    """

    name = "rabbitmq"
    start_timeout = 90.0
    process_group = True
    SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")

    def __init__(self, *, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(port=port, workdir=workdir)
        self.node = f"locktwin-{uuid.uuid4().hex[:8]}@localhost"
        self.dist_port = free_port()

    @classmethod
    def available(cls) -> bool:
        return cls.SCRIPT.exists()

    def _command(self) -> list[str]:
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp = none\nmqtt.listeners.tcp.default = 127.0.0.1:{self.port}\nmqtt.allow_anonymous = true\n"
        )
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        return [str(self.SCRIPT)]

    def _environment(self) -> dict[str, str]:
        base = str(self.workdir)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": base,  # the node's own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
            "RABBITMQ_LOG_BASE": f"{base}/log",
            "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
            "RABBITMQ_PID_FILE": f"{base}/rabbitmq.pid",
        }


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)  # its log names users and clients
