"""``mosquitto/make-certs`` and the production broker's TLS listeners with the certificates it makes.

The script is run as an operator would (openssl underneath); its certificates are read back with
``cryptography``. Then mosquitto runs the shipped ``mosquitto.conf`` (tests/test_broker_acl.py's
``production_broker``: only ports and paths rewritten) with them: a bridge over 8883 with its
password, operators and dashboards over 8884 with their client certificates and the ACL of the
certificate's name, compose's broker healthcheck and deploy/healthcheck.py over TLS.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fake_adapter import FakeAdapter
from tests.test_broker_acl import MOSQUITTO, ROLES, TEST_BRIDGE, Broker, make_certs, production_broker
from twin.config import MqttSettings
from twin.mqtt import mqtt_client
from twin.testing import BridgeHarness

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or shutil.which("openssl") is None, reason="needs mosquitto and openssl"
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names(cert: x509.Certificate) -> set[str]:
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in alt.get_values_for_type(x509.DNSName)} | {
        str(n) for n in alt.get_values_for_type(x509.IPAddress)
    }


def test_make_certs_writes_a_ca_the_brokers_certificate_and_one_per_role(tmp_path: Path) -> None:
    make_certs(tmp_path, "--host", "broker.example", "--host", "10.0.0.7")
    certs = tmp_path / "certs"
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        f"{name}.{ext}" for name in ("ca", "server", *ROLES) for ext in ("crt", "key")
    )
    for path in certs.iterdir():
        assert path.stat().st_mode & 0o777 == (0o600 if path.suffix == ".key" else 0o644), path
    ca = load(certs / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = load(certs / "server.crt")
    server.verify_directly_issued_by(ca)
    # the name the bridges use in compose.yaml, the loopback ones, and the --host names
    bridge_host = COMPOSE["services"]["segway"]["environment"]["LOCKTWIN_MQTT__URL"].split("//")[1].split(":")[0]
    assert names(server) == {bridge_host, "localhost", "127.0.0.1", "broker.example", "10.0.0.7"}
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for role in ROLES:
        cert = load(certs / f"{role}.crt")
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == role
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert "PRIVATE KEY" in (certs / f"{role}.key").read_text()
        # Python 3.13 clients verify strictly: leaf certificates need an authority key identifier
        cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_make_certs_is_idempotent_and_reissues_what_is_reset(tmp_path: Path) -> None:
    make_certs(tmp_path)
    certs = tmp_path / "certs"

    def contents() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(certs.iterdir())}

    first = contents()
    again = make_certs(tmp_path)
    assert contents() == first and "nothing to do" in again.stderr
    asked = make_certs(tmp_path, "--host", "new.example")
    assert contents() == first  # a kept server certificate is not re-issued unasked, but it says so
    assert "server.crt is not valid for new.example: run with --reset server" in asked.stderr
    make_certs(tmp_path, "--reset", "operator")
    changed = {name for name, data in contents().items() if first[name] != data}
    assert changed == {"operator.crt", "operator.key"}
    make_certs(tmp_path, "--reset", "ca")
    assert all(first[name] != data for name, data in contents().items())
    (certs / "ca.key").unlink()
    (certs / "dashboard.crt").unlink()
    with pytest.raises(subprocess.CalledProcessError) as refused:
        make_certs(tmp_path)
    assert "ca.key is not here, so dashboard cannot be issued" in refused.value.stderr


# -- the production broker with these certificates ----------------------------------------------


@pytest.fixture(scope="module")
def made_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("production-certs")
    make_certs(directory)
    return directory / "certs"


@pytest.fixture
def broker(made_certs: Path) -> Iterator[Broker]:
    with production_broker(made_certs) as started:
        yield started


def with_certificate(broker: Broker, role: str) -> MqttSettings:
    """A role's settings on the listener that takes client certificates (no password)."""
    return MqttSettings(
        url=f"mqtts://localhost:{broker.mtls_port}",
        ca_file=broker.certs / "ca.crt",
        cert_file=broker.certs / f"{role}.crt",
        key_file=broker.certs / f"{role}.key",
    )


def bridge_over_tls(broker: Broker, tmp_path: Path, adapter: FakeAdapter) -> BridgeHarness:
    mqtt = MqttSettings(url=f"mqtts://localhost:{broker.tls_port}", ca_file=broker.certs / "ca.crt")
    return BridgeHarness(
        adapter=adapter,
        mqtt=mqtt,
        data_dir=tmp_path / "bridge",
        base_topic="locktwin",
        username=TEST_BRIDGE,
        password=broker.passwords[TEST_BRIDGE],
    )


@pytest.mark.anyio
async def test_bridge_with_password_and_operators_with_certificates(broker: Broker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with (
        bridge_over_tls(broker, tmp_path, adapter) as h,
        mqtt_client(with_certificate(broker, "operator"), identifier=f"op-{uuid.uuid4().hex[:6]}") as operator,
        mqtt_client(with_certificate(broker, "dashboard"), identifier=f"dash-{uuid.uuid4().hex[:6]}") as dashboard,
    ):
        # the dashboard's certificate name is its username: the ACL drops its unlock
        await dashboard.publish(h.topic("d1", "set"), "UNLOCK", qos=1)
        await operator.subscribe(h.topic("d1", "response/#"), qos=1)
        await operator.publish(h.topic("d1", "set"), '{"lock":"UNLOCKED","transaction":"t-op-cert"}', qos=1)
        final = await h.final("d1", "t-op-cert")
        assert final["status"] == "succeeded"
        # one device's commands run in order: had the dashboard's gone through, it would show first
        assert adapter.calls == [("d1", "unlock")]
        with anyio.fail_after(15):
            async for message in operator.messages:  # the operator reads its answers
                if b"t-op-cert" in bytes(message.payload) and b"succeeded" in bytes(message.payload):  # type: ignore[arg-type]
                    break
    assert "New client connected" in broker.log() and " u'operator'" in broker.log()


@pytest.mark.anyio
async def test_compose_broker_healthcheck_and_bridge_healthcheck_over_tls(broker: Broker, tmp_path: Path) -> None:
    # compose.yaml's broker healthcheck, run against the same file with the test's port and path
    line = COMPOSE["services"]["mosquitto"]["healthcheck"]["test"][1]
    line = line.replace("$$", "$").replace("-p 8883", f"-p {broker.tls_port}")
    line = line.replace("/mosquitto/config/certs/", f"{broker.certs}/")
    assert shlex.split(line)[0] == "mosquitto_sub" and shutil.which("mosquitto_sub")
    with anyio.fail_after(30):
        assert (await anyio.run_process(["sh", "-c", line], check=False)).returncode == 0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")},
        "PYTHONPATH": str(REPO),
        "LOCKTWIN_MQTT__URL": f"mqtts://localhost:{broker.tls_port}",
        "LOCKTWIN_MQTT__CA_FILE": str(broker.certs / "ca.crt"),
        "LOCKTWIN_MQTT__USERNAME": TEST_BRIDGE,
        "LOCKTWIN_MQTT__PASSWORD_FILE": str(broker.workdir / "secrets" / f"{TEST_BRIDGE}.password"),
    }
    script = [sys.executable, str(REPO / "deploy" / "healthcheck.py"), "fake"]
    async with bridge_over_tls(broker, tmp_path, FakeAdapter()):
        with anyio.fail_after(30):
            assert (await anyio.run_process(script, env=env, check=False)).returncode == 0
    with anyio.fail_after(30):
        wrong = await anyio.run_process(
            script, env={**env, "LOCKTWIN_MQTT__CA_FILE": str(broker.certs / "operator.crt")}, check=False
        )
    assert wrong.returncode == 1 and b"is not signed by a CA in mqtt.ca_file" in wrong.stderr
