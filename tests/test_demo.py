"""``locktwin demo`` end to end: every vendor's simulator and bridge, a command each, a clean stop,
and a second start that finds its twins again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from twin.broker import MosquittoBroker, free_port
from twin.registry import ADAPTERS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="the demo test uses mosquitto")


class Demo:
    def __init__(self, data: Path, port: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twin.cli",
                "demo",
                "--no-live",
                "--data",
                str(data),
                "--port",
                str(port),
                "--devices",
                "2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


class Watcher:
    def __init__(self, port: int) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-test-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("locktwin/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.setdefault(msg.topic, []).append(msg.payload)
            self.cond.notify_all()

    def final(self, topic: str, transaction: str, timeout: float = 60) -> dict[str, object]:
        def found() -> dict[str, object] | None:
            for raw in self.messages.get(topic, []):
                doc = json.loads(raw)
                if doc.get("transaction") == transaction and doc["status"] not in ("accepted",):
                    return doc
            return None

        with self.cond:
            assert self.cond.wait_for(found, timeout=timeout), f"no final answer on {topic}"
            return found()  # type: ignore[return-value]

    def last(self, topic: str, timeout: float = 30) -> bytes:
        with self.cond:
            assert self.cond.wait_for(lambda: self.messages.get(topic), timeout=timeout), topic
            return self.messages[topic][-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.timeout(300)
def test_demo_runs_every_vendor_and_keeps_twins(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "demo"
    demo = Demo(data, port)
    try:
        demo.wait_line(r"(\d+) bridges online")
        started = {
            m.group(1): m.group(2)
            for line in demo.lines
            if (m := re.search(r"^\s*(\w+): simulator on \S+, devices ([^,\s]+)", line))
        }
        assert set(started) == set(ADAPTERS), "\n".join(demo.lines)
        assert any("mosquitto_pub" in line for line in demo.lines)
        watcher = Watcher(port)
        try:
            for vendor, device in started.items():
                watcher.client.publish(
                    f"locktwin/{vendor}/{device}/set",
                    json.dumps({"lock": "UNLOCKED", "transaction": f"demo-{vendor}", "expires_in": 60}),
                    qos=1,
                )
            for vendor, device in started.items():
                answer = watcher.final(f"locktwin/{vendor}/{device}/response/set", f"demo-{vendor}")
                assert answer["status"] == "succeeded", (vendor, answer)
        finally:
            watcher.close()
        # a second demo on the same data folder is refused while this one runs
        second = subprocess.run(
            [sys.executable, "-m", "twin.cli", "demo", "--no-live", "--data", str(data), "--port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is in use by pid" in second.stderr and "locktwin demo is already running" in second.stderr
    finally:
        assert demo.stop() == 0, "\n".join(demo.lines)
    output = "\n".join(demo.lines)
    assert "demo stopped" in output
    assert "Traceback" not in output and "never retrieved" not in output, output
    # the commands to try are printed again on exit (the live table wiped them off the screen)
    after = output[output.index("demo stopped") :]
    assert "mosquitto_sub" in after and "locktwin" in after
    # The broker's own retained messages are gone: whatever comes back comes from the stores.
    shutil.rmtree(data / "broker")
    again = Demo(data, port)
    try:
        again.wait_line(r"(\d+) bridges online")
        watcher = Watcher(port)
        try:
            for vendor, device in started.items():
                twin = json.loads(watcher.last(f"locktwin/{vendor}/{device}/twin"))
                assert twin["command"]["transaction"] == f"demo-{vendor}", (vendor, twin)
                assert twin["command"]["status"] == "succeeded"
        finally:
            watcher.close()
    finally:
        assert again.stop() == 0


def test_demo_port_is_stable() -> None:
    from twin.demo import choose_port

    assert choose_port(None, is_free=lambda port: True) == 1883
    assert choose_port(None, is_free=lambda port: port != 1883) == 1884
    assert choose_port(2000, is_free=lambda port: False) == 2000


def test_banner_lines_run_from_a_fresh_shell() -> None:
    from twin.demo import banner_lines, locktwin_command

    cli = locktwin_command()
    assert cli == "locktwin" or Path(cli.split()[0]).exists() or cli.startswith(sys.executable)
    lines = banner_lines(1884, {"okai": "863795050000001"})
    assert any("mosquitto_pub -p 1884 -t locktwin/okai/863795050000001/set -m UNLOCK" in line for line in lines)
    assert any(f"LOCKTWIN_MQTT__URL=mqtt://127.0.0.1:1884 {cli} unlock okai/863795050000001" in line for line in lines)
