"""The operator CLI against a real bridge process: exit codes follow the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_adapter import TARGET
from twin.broker import free_port
from twin.testing_process import ROOT, BridgeProcess

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def bridge(mqtt_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    env = {"LOCKTWIN_METRICS_PORT": str(METRICS_PORT)}
    data_dir = tmp_path_factory.mktemp("cli")
    with BridgeProcess(broker_url=mqtt_broker, data_dir=data_dir, vendor="fake", targets=[TARGET], env=env) as running:
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
    assert sum(line.startswith("DEVICE") for line in lines) == 1, done.stdout  # once, not twice


def test_watch_redraws_only_on_change(bridge: BridgeProcess) -> None:
    """An idle fleet is drawn once; it was redrawn 5 times a second, forever."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "twin.cli", "watch"],
        env=bridge.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    tables = sum(line.startswith("DEVICE") for line in out.splitlines())
    assert 1 <= tables <= 2, out


def test_commands_say_when_they_were_issued_and_when_they_expire(bridge: BridgeProcess) -> None:
    """The CLI's /set carries issued_at, expires_in and an MQTT 5 Message Expiry Interval."""
    import paho.mqtt.client as paho

    host, port = bridge.broker_url.removeprefix("mqtt://").split(":")
    seen: list[paho.MQTTMessage] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda c, u, m: seen.append(m)
    client.connect(host, int(port))
    client.subscribe(f"{bridge.base}/fake/d1/set", qos=1)
    client.loop_start()
    try:
        done = locktwin(bridge, "lock", "fake/d1", "--wait", "--timeout", "20", "--expires-in", "12")
        assert done.returncode == 0, done.stderr
    finally:
        client.loop_stop()
        client.disconnect()
    [message] = seen
    body = json.loads(message.payload)
    assert body["expires_in"] == 12 and body["issued_at"].endswith("+00:00")
    assert 1 <= message.properties.MessageExpiryInterval <= 12


def test_help_lists_the_vendors_own_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "--help"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "smartcar connect" in done.stdout
    assert "segway check" in done.stdout


def test_a_missing_configuration_file_is_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "segway", "--config", str(tmp_path / "nope.toml")],
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"locktwin: configuration: {tmp_path / 'nope.toml'}: no such configuration file"
    ]


def test_configuration_errors_name_the_toml_key_and_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "okai"],
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOCKTWIN_MQTT__KEEPALIVE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "mqtt.keepalive (TOML) or LOCKTWIN_MQTT__KEEPALIVE (environment)" in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "okai"],
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "vendors.okai.user_key (TOML) or LOCKTWIN_OKAI_USER_KEY (environment): Field required" in done.stderr
    assert "_EnvFirst" not in done.stderr and "Traceback" not in done.stderr


def test_a_second_bridge_on_the_same_store_is_refused(bridge: BridgeProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", TARGET],
        check=False,
        env=bridge.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "is in use by pid" in line and "fake bridge is already running" in line, line


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


def test_simulate_prints_how_to_point_a_bridge_at_it() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "twin.cli", "simulate", "okai", "--port", str(port), "--devices", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("LOCKTWIN_OKAI_SIGN_KEY=") for line in lines):
            line = proc.stdout.readline()
            assert line, "\n".join(lines)
            lines.append(line.rstrip())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = "\n".join(lines)
    assert f"okai simulator on http://127.0.0.1:{port} with 2 devices" in text
    assert "863795050000001, 863795050000002" in text
    assert "[vendors.okai]" in text and f'base_url = "http://127.0.0.1:{port}/shareos-device"' in text
    assert "sign_key =" not in text  # a secret goes in the environment, where the bridge reads it
