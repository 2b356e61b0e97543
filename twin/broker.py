"""Brokers the project starts itself: a private mosquitto (tests, the demo) or amqtt (the demo
on a machine without mosquitto)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twin.files import private_folder, write_private

__all__ = ["MosquittoBroker", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """A private mosquitto process with a configuration of the test's choosing."""

    def __init__(self, *, port: int | None = None, extra_config: str = "", workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.extra_config = extra_config
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
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
        # A session of its own: Ctrl-C in a terminal signals the whole foreground process group, and
        # the broker must outlive the bridges' goodbyes (its owner stops it last).
        self._proc = subprocess.Popen(  # noqa: S603
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            umask=0o077,  # its persistence file (retained messages, queued commands) 0600 too
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"mosquitto exited: {err}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
