"""Every command line of the README runs as written, against the demo.

The README's ``sh`` blocks are read in order; each line is run with ``bash`` in the checkout, with
the virtualenv on the PATH (as ``. .venv/bin/activate`` puts it there), against a demo started on a
free port: ``mosquitto_pub``/``mosquitto_sub`` take that port from their own configuration file
(``$XDG_CONFIG_HOME/mosquitto_pub``), ``locktwin`` from ``LOCKTWIN_MQTT__URL``, and stores go to a
temporary data folder. A line ending in ``&`` runs in the background until its block is done; a
line that runs until stopped (a bridge, a simulator, a live watch) must come up (its ready line, or
still running after a few seconds) and is then stopped; every other line must exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_demo import Demo
from twin.broker import MosquittoBroker, free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="the README's commands use mosquitto")

#: lines that are not run here, and why (each still runs as written where its reason does not hold)
NOT_HERE = {
    "scripts/demo": "the demo is what these lines run against",
    "scripts/test": "this test is part of it",
    "docker ": "no Docker engine here; tests/test_compose.py checks the compose files",
    "python -m bench": "benchmarks run for minutes; bench/README.md has their figures",
    ". .venv/bin/activate": "the virtualenv is on the PATH of every line",
    "LOCKTWIN_STORE=postgresql": "a database of its own per run: tests/faults/test_failover.py starts these instances",
}
#: lines that run until stopped: the output that says they are up (None: still running after a while)
SERVICES: list[tuple[re.Pattern[str], str | None]] = [
    (re.compile(r"\blocktwin run\b"), "bridge connected"),
    (re.compile(r"\blocktwin simulate\b"), "simulator on"),
    (re.compile(r"\blocktwin console\b"), "locktwin console on"),
    (re.compile(r"\blocktwin fleet(?!\s+(query|job|zone)\b)"), "fleet service connected"),
    (re.compile(r"\blocktwin watch(?!.*--once)"), "DEVICE"),
    (re.compile(r"^mosquitto_sub\b(?!.*\s-[CW]\s)"), None),
]


@dataclass(frozen=True)
class Line:
    block: int
    text: str


def readme_lines() -> list[Line]:
    lines: list[Line] = []
    block, inside = 0, False
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.startswith("```"):
            inside = raw.strip() == "```sh"
            block += inside
            continue
        if inside and raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(Line(block, raw.strip()))
    return lines


def skipped(line: str) -> str | None:
    return next((why for prefix, why in NOT_HERE.items() if line.startswith(prefix)), None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("readme")
    port = free_port()
    running = Demo(tmp / "demo", port)
    try:
        running.wait_line(r"bridges online")
        xdg = tmp / "xdg"
        xdg.mkdir()
        for tool in ("mosquitto_pub", "mosquitto_sub"):
            (xdg / tool).write_text(f"-p {port}\n")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "XDG_CONFIG_HOME": str(xdg),
            "LOCKTWIN_MQTT__URL": f"mqtt://127.0.0.1:{port}",
            "LOCKTWIN_DATA_DIR": str(tmp / "data"),
            "PYTHONPATH": str(ROOT),
        }
        yield running, env
    finally:
        assert running.stop() == 0, "\n".join(running.lines)


class Started:
    def __init__(self, line: str, env: dict[str, str], log: Path) -> None:
        self.line = line
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(
            ["bash", "-c", line], cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        self.out.flush()
        return self.log.read_text(errors="replace")

    def wait_up(self, ready: str | None, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        settle = time.monotonic() + 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.line!r} exited {self.proc.returncode}:\n{self.output()}")
            if (ready is not None and ready in self.output()) or (ready is None and time.monotonic() > settle):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.line!r} never came up ({ready!r}):\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()


def test_readme_lists_commands() -> None:
    lines = [line.text for line in readme_lines()]
    assert "scripts/demo" in lines[0] and "scripts/test" in lines[1]
    assert len(lines) > 10


@pytest.mark.timeout(600)
def test_every_readme_command_runs_as_written(demo: tuple[Demo, dict[str, str]], tmp_path: Path) -> None:
    _, env = demo
    background: list[Started] = []
    ran: list[str] = []
    block = 0
    try:
        for n, line in enumerate(readme_lines()):
            if line.block != block:  # a block's background lines live until the block is done
                for started in background:
                    started.stop()
                background, block = [], line.block
            if skipped(line.text):
                continue
            text = line.text
            if text.endswith("&"):
                started = Started(text.rstrip("&").strip(), env, tmp_path / f"{n}.log")
                background.append(started)
                ready = next((r for pattern, r in SERVICES if pattern.search(started.line)), None)
                started.wait_up(ready)
                ran.append(text)
                continue
            service = next(((p, r) for p, r in SERVICES if p.search(text)), None)
            if service is not None:
                started = Started(text, env, tmp_path / f"{n}.log")
                try:
                    started.wait_up(service[1])
                finally:
                    started.stop()
                ran.append(text)
                continue
            done = subprocess.run(
                ["bash", "-c", text], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, f"{text!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            ran.append(text)
    finally:
        for started in background:
            started.stop()
    assert len(ran) >= 10, ran
