"""TLS between locktwin and a real mosquitto, with certificates made in the test (conftest.py).

A bridge connects over TLS and serves a command; a wrong CA, an expired server certificate, a
wrong host name and a missing or untrusted client certificate are each refused with one line that
names what is wrong, and the bridge keeps retrying with its backoff; a listener that requires
client certificates takes a bridge that has one (its key encrypted, the passphrase from the
environment); no key material or passphrase shows in any log; the CLI speaks TLS with the same
settings and says in one line why it could not.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from tests.fake_adapter import FakeAdapter
from tests.transport.conftest import PASSPHRASE, LogLines, Pki, TlsBroker
from twin.config import MqttSettings, load_settings
from twin.runtime import BridgeRuntime
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


def tls(port: int, pki: Pki, *, host: str = "localhost", **extra: Any) -> MqttSettings:
    return MqttSettings(url=f"mqtts://{host}:{port}", ca_file=pki.ca.cert_file, **extra)


def reconnects() -> float:
    return REGISTRY.get_sample_value("locktwin_mqtt_reconnects_total", {"vendor": "fake"}) or 0.0


async def test_bridge_serves_a_command_over_tls(tls_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].locked = False
    async with BridgeHarness(adapter=adapter, mqtt=tls(tls_broker.tls, pki), data_dir=tmp_path) as h:
        final = await h.set("d1", {"lock": "LOCKED"})
        assert final["status"] == "succeeded"
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")
        assert h.runtime is not None and h.runtime.publisher.connected


async def test_the_address_may_be_the_ip_in_the_certificate(tls_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    async with BridgeHarness(
        adapter=FakeAdapter(), mqtt=tls(tls_broker.tls, pki, host="127.0.0.1"), data_dir=tmp_path
    ) as h:
        assert (await h.get("d1"))["status"] == "succeeded"


REFUSALS = {
    "wrong-ca": (
        lambda b, p: MqttSettings(url=f"mqtts://localhost:{b.tls}", ca_file=p.stranger_ca.cert_file),
        "is not signed by a CA in mqtt.ca_file",
    ),
    "expired-server-certificate": (lambda b, p: tls(b.expired, p), "has expired"),
    "wrong-host-name": (lambda b, p: tls(b.other_host, p), "is not valid for the name localhost"),
    "no-client-certificate": (
        lambda b, p: tls(b.mutual, p),
        "the broker requires a client certificate: set mqtt.cert_file and mqtt.key_file",
    ),
    "untrusted-client-certificate": (
        lambda b, p: tls(b.mutual, p, cert_file=p.stranger.cert, key_file=p.stranger.key),
        "refused our client certificate",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_in_one_line_and_retried_with_backoff(
    case: str, tls_broker: TlsBroker, pki: Pki, tmp_path: Path, log_lines: LogLines
) -> None:
    settings_of, expected = REFUSALS[case]
    mqtt = settings_of(tls_broker, pki)
    runtime = BridgeRuntime(
        adapter=FakeAdapter(), mqtt=mqtt, data_dir=tmp_path, base_topic=f"lt-{uuid.uuid4().hex[:8]}"
    )
    before = reconnects()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.run)
        lines = await log_lines.wait_lines("twin.runtime", 2)
        tg.cancel_scope.cancel()
    assert not runtime.connected.is_set()
    first, second = lines[:2]
    for line in (first, second):
        assert "\n" not in line and expected in line, line
        assert line.startswith(f"MQTT {mqtt.url}: ") and "cannot connect" in line
    # the same backoff as any lost connection: 0.5 s, then doubled
    assert first.endswith("retrying in 0.5s") and second.endswith("retrying in 1.0s")
    assert reconnects() - before >= 2
    warnings = [r for r in log_lines.records if r.levelno >= logging.WARNING]
    assert all(r.exc_info is None for r in warnings)  # no traceback
    # paho's own socket error is not a second line about the same refusal
    assert not [r for r in warnings if r.name == "mqtt"]


async def test_client_certificate_listener_takes_a_bridge_with_one(
    tls_broker: TlsBroker, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: LogLines
) -> None:
    # as an operator configures it: files in the TOML-or-environment settings, the passphrase in the environment
    key = pki.bridge_encrypted
    for name, value in {
        "URL": f"mqtts://localhost:{tls_broker.mutual}",
        "CA_FILE": str(pki.ca.cert_file),
        "CERT_FILE": str(key.cert),
        "KEY_FILE": str(key.key),
        "KEY_PASSWORD": PASSPHRASE,
    }.items():
        monkeypatch.setenv(f"LOCKTWIN_MQTT__{name}", value)
    mqtt = load_settings(None).mqtt
    assert mqtt.key_password == SecretStr(PASSPHRASE) and PASSPHRASE not in repr(mqtt)
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, mqtt=mqtt, data_dir=tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED"})
        assert final["status"] == "succeeded" and adapter.calls == [("d1", "unlock")]
    assert_no_key_material(pki, [r.getMessage() for r in log_lines.records])


async def test_key_passphrase_from_a_file(tls_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "key.pass"
    secret.write_text(PASSPHRASE + "\n")
    mqtt = tls(
        tls_broker.mutual,
        pki,
        cert_file=pki.bridge_encrypted.cert,
        key_file=pki.bridge_encrypted.key,
        key_password_file=secret,
    )
    async with BridgeHarness(adapter=FakeAdapter(), mqtt=mqtt, data_dir=tmp_path / "data") as h:
        assert (await h.get("d1"))["status"] == "succeeded"


async def test_tls_insecure_connects_anyway_and_says_so(
    tls_broker: TlsBroker, pki: Pki, tmp_path: Path, log_lines: LogLines
) -> None:
    mqtt = MqttSettings(url=f"mqtts://localhost:{tls_broker.other_host}", tls_insecure=True)
    async with BridgeHarness(adapter=FakeAdapter(), mqtt=mqtt, data_dir=tmp_path) as h:
        assert (await h.get("d1"))["status"] == "succeeded"
    warnings = log_lines.lines("twin.mqtt", logging.WARNING)
    assert warnings and all("NOT verified" in w and mqtt.url in w for w in warnings)


# -- no key material in any log -----------------------------------------------------------------


def key_material(pki: Pki) -> list[str]:
    """What must never be printed: PEM bodies of every key here, and the passphrase."""
    lines = [PASSPHRASE, "PRIVATE KEY"]
    for issued in (pki.bridge, pki.bridge_encrypted, pki.stranger, pki.server):
        lines += [line for line in issued.key.read_text().splitlines() if "-----" not in line and len(line) > 16]
    return lines


def assert_no_key_material(pki: Pki, texts: list[str]) -> None:
    blob = "\n".join(texts)
    leaked = [secret for secret in key_material(pki) if secret in blob]
    assert not leaked


@pytest.fixture
def cli_env(tls_broker: TlsBroker, pki: Pki) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "LOCKTWIN_MQTT__URL": f"mqtts://localhost:{tls_broker.mutual}",
            "LOCKTWIN_MQTT__CA_FILE": str(pki.ca.cert_file),
            "LOCKTWIN_MQTT__CERT_FILE": str(pki.bridge_encrypted.cert),
            "LOCKTWIN_MQTT__KEY_FILE": str(pki.bridge_encrypted.key),
            "LOCKTWIN_MQTT__KEY_PASSWORD": PASSPHRASE,
        }
    )
    yield env


async def locktwin(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    with anyio.fail_after(30):
        done = await anyio.run_process([sys.executable, "-m", "twin.cli", *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_cli_speaks_tls_with_the_same_settings(
    tls_broker: TlsBroker, pki: Pki, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    adapter = FakeAdapter()
    mqtt = tls(tls_broker.mutual, pki, cert_file=pki.bridge.cert, key_file=pki.bridge.key)
    async with BridgeHarness(adapter=adapter, mqtt=mqtt, data_dir=tmp_path) as h:
        code, _, err = await locktwin({**cli_env, "LOCKTWIN_BASE_TOPIC": h.base}, "unlock", "fake/d1", "--wait")
        assert code == 0, err
        assert adapter.calls == [("d1", "unlock")]
        assert_no_key_material(pki, [err])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"LOCKTWIN_MQTT__CA_FILE": "stranger"}, "is not signed by a CA in mqtt.ca_file"),
        ({"LOCKTWIN_MQTT__KEY_PASSWORD": "not the passphrase"}, "wrong passphrase"),
        (
            {"LOCKTWIN_MQTT__CERT_FILE": None, "LOCKTWIN_MQTT__KEY_FILE": None, "LOCKTWIN_MQTT__KEY_PASSWORD": None},
            "requires a client certificate",
        ),
    ],
    ids=["wrong-ca", "wrong-passphrase", "no-client-certificate"],
)
async def test_the_cli_says_in_one_line_why_it_cannot_connect(
    pki: Pki, cli_env: dict[str, str], change: dict[str, str | None], expected: str
) -> None:
    env = dict(cli_env)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = str(pki.stranger_ca.cert_file) if value == "stranger" else value
    code, out, err = await locktwin(env, "twin", "fake/d1")
    assert code in (2, 7), err  # 2: a file of the settings cannot be used, 7: the broker refused
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert_no_key_material(pki, [out, err])
