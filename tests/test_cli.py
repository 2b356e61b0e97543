"""The operator CLI against a real bridge process: exit codes follow the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bridge_process import ROOT, BridgeProcess, bridge_process
from twin.broker import free_port

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def bridge(mqtt_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    env = {"LOCKTWIN_METRICS_PORT": str(METRICS_PORT)}
    with bridge_process(mqtt_broker, tmp_path_factory.mktemp("cli"), extra_env=env) as running:
        yield running


def locktwin(bridge: BridgeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", *args],
        check=False,
        env=bridge.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unlock_wait_exits_zero_on_success(bridge: BridgeProcess) -> None:
    done = locktwin(bridge, "unlock", "fake/d1", "--wait", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stderr
    twin = locktwin(bridge, "twin", "fake/d1")
    assert twin.returncode == 0
    assert json.loads(twin.stdout)["reported"]["lock"] == "UNLOCKED"


def test_lock_without_wait_exits_on_accepted(bridge: BridgeProcess) -> None:
    done = locktwin(bridge, "lock", "fake/d2", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("accepted")


def test_rejected_and_unknown_device_exit_codes(bridge: BridgeProcess) -> None:
    unknown = locktwin(bridge, "lock", "fake/ghost", "--wait", "--timeout", "20")
    assert unknown.returncode == 3
    assert "UNKNOWN_DEVICE" in unknown.stderr
    bad = locktwin(bridge, "request", "fake/d1", "find", "volume=7")
    assert bad.returncode == 3
    assert "INVALID_PAYLOAD" in bad.stderr


def test_request_prints_data(bridge: BridgeProcess) -> None:
    done = locktwin(bridge, "request", "fake/d1", "find", "volume=3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"beeped": True, "volume": 3}


def test_no_bridge_times_out_with_its_own_exit_code(bridge: BridgeProcess) -> None:
    done = locktwin(bridge, "lock", "nobody/d1", "--wait", "--timeout", "1")
    assert done.returncode == 6
    assert "no answer" in done.stderr


def test_watch_once_prints_a_table(bridge: BridgeProcess) -> None:
    done = locktwin(bridge, "watch", "--once")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DEVICE")
    assert any(line.startswith("fake/d1") for line in lines)


def test_bad_target_is_a_usage_error(bridge: BridgeProcess, tmp_path: Path) -> None:
    done = locktwin(bridge, "lock", "no-slash")
    assert done.returncode == 2
    assert "expected <vendor>/<device>" in done.stderr


def test_metrics_count_commands_and_vendor_calls(bridge: BridgeProcess) -> None:
    assert locktwin(bridge, "unlock", "fake/d2", "--wait", "--timeout", "20").returncode == 0
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
    assert 'locktwin_commands_total{action="lock",status="succeeded",vendor="fake"}' in text
    assert 'locktwin_vendor_call_seconds_count{operation="lock",outcome="ok",vendor="fake"}' in text
    assert "locktwin_commands_in_flight" in text


def test_configuration_errors_never_echo_secrets(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "LOCKTWIN_OKAI_USER_KEY": "very-secret-user-key",
        "LOCKTWIN_OKAI_DEVICES": '["863795050000001"]',
        "LOCKTWIN_OKAI_POLL_INTERVAL": "often",
    }
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "okai"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "configuration" in done.stderr and "poll_interval" in done.stderr
    assert "very-secret-user-key" not in done.stderr + done.stdout
