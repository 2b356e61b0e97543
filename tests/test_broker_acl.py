"""The production broker setup (``mosquitto/``) against a real mosquitto and a real bridge.

Each test starts mosquitto with exactly ``mosquitto/mosquitto.conf`` (only the listeners' ports, the
paths and the log destination are rewritten, see :func:`for_test`), ``mosquitto/acl``, a password
file made by ``mosquitto/make-passwords`` and certificates made by ``mosquitto/make-certs`` (its TLS
listeners are tested in tests/transport/test_production_tls.py), then drives a bridge (``BridgeHarness`` with the fake
adapter on base topic ``locktwin``, connected as ``bridge``) with clients of the other roles.

A publish the ACL denies is dropped by the broker (a v5 publisher gets PUBACK "not authorized").
To show that nothing arrived without waiting on a clock, each negative check is followed by a
permitted command on the same device: the bridge handles one device's commands in order, so once
the later command's final answer is in, an earlier one that had got through would have been seen.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest
from pydantic import SecretStr

from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.config import MqttSettings
from twin.fleet.service import FleetService
from twin.fleet.settings import FleetSettings
from twin.testing import BridgeHarness, free_port, v5_reply

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "mosquitto" / "mosquitto.conf"
ACL = REPO / "mosquitto" / "acl"
MAKE_PASSWORDS = REPO / "mosquitto" / "make-passwords"
MAKE_CERTS = REPO / "mosquitto" / "make-certs"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
ROLES = ("bridge", "operator", "homeassistant", "dashboard", "fleet")
BASE = "locktwin"

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or (
    "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
)
_missing = [name for name, path in (("mosquitto", MOSQUITTO), ("mosquitto_passwd", MOSQUITTO_PASSWD)) if not path]

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(bool(_missing), reason=f"{' and '.join(_missing)} not installed (apt-get install mosquitto)"),
]

#: The only directives the test changes, with the production values each has in the file, in order.
PRODUCTION = {
    "listener": ["listener 1883 127.0.0.1", "listener 8883", "listener 8884"],
    "cafile": ["cafile /mosquitto/config/certs/ca.crt"] * 2,
    "certfile": ["certfile /mosquitto/config/certs/server.crt"] * 2,
    "keyfile": ["keyfile /mosquitto/config/certs/server.key"] * 2,
    "password_file": ["password_file /mosquitto/config/passwd"],
    "acl_file": ["acl_file /mosquitto/config/acl"],
    "persistence_location": ["persistence_location /mosquitto/data/"],
    "log_dest": ["log_dest stdout"],
}
#: production port of each listener
PLAIN, TLS, MUTUAL_TLS = 1883, 8883, 8884


def _directive(line: str) -> str | None:
    stripped = line.strip()
    return stripped.split()[0] if stripped and not stripped.startswith("#") else None


def for_test(conf: str, *, ports: dict[int, int], workdir: Path) -> str:
    """The production configuration with only the listeners' ports (production port -> test port),
    the paths and the log destination changed."""

    def rewrite(line: str) -> str:
        key = _directive(line)
        if key == "listener":
            return f"listener {ports[int(line.split()[1])]} 127.0.0.1\n"
        if key in ("cafile", "certfile", "keyfile"):
            return f"{key} {workdir}/certs/{Path(line.split()[1]).name}\n"
        replacements = {
            "password_file": f"password_file {workdir}/passwd",
            "acl_file": f"acl_file {workdir}/acl",
            "persistence_location": f"persistence_location {workdir}/data/",
            "log_dest": f"log_dest file {workdir}/mosquitto.log",
        }
        return replacements[key] + "\n" if key in replacements else line

    return "".join(rewrite(line) for line in conf.splitlines(keepends=True))


def make_passwords(directory: Path, **env: str) -> dict[str, str]:
    """Run make-passwords; the passwords it generated, by role."""
    out = subprocess.run(
        [str(MAKE_PASSWORDS), "--dir", str(directory)],
        env={**os.environ, "MOSQUITTO_PASSWD": str(MOSQUITTO_PASSWD), **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def make_certs(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run make-certs (openssl) into ``directory``/certs."""
    return subprocess.run([str(MAKE_CERTS), "--dir", str(directory), *args], capture_output=True, text=True, check=True)


@dataclass
class Broker:
    port: int
    workdir: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    #: test ports of the TLS listeners (8883: password, 8884: client certificate)
    tls_port: int = 0
    mtls_port: int = 0

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""


def _give_to_broker_user(workdir: Path) -> None:
    """Started as root, mosquitto 2.0 drops to its own user before reading passwd and acl (the
    eclipse-mosquitto image chowns /mosquitto for the same reason), and so before reading its
    certificates and key."""
    if os.geteuid() != 0:
        return
    for name in ("mosquitto", "nobody"):
        try:
            user = pwd.getpwnam(name)
            break
        except KeyError:
            continue
    else:
        return
    certs = workdir / "certs"
    broker_files = [certs, certs / "ca.crt", certs / "server.crt", certs / "server.key"]
    for path in (workdir, workdir / "data", workdir / "passwd", workdir / "acl", workdir / "mosquitto.conf"):
        os.chown(path, user.pw_uid, user.pw_gid)
    for path in broker_files:
        if path.exists():
            os.chown(path, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="session")
def production_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificates make-certs writes, once per session (each broker gets a copy)."""
    directory = tmp_path_factory.mktemp("make-certs")
    make_certs(directory)
    return directory / "certs"


@pytest.fixture
def broker(production_certs: Path) -> Iterator[Broker]:
    with production_broker(production_certs) as started:
        yield started


@contextmanager
def acl_broker() -> Iterator[Broker]:
    """:func:`production_broker` with certificates of its own (tests/console uses it)."""
    directory = Path(tempfile.mkdtemp(prefix="locktwin-certs-"))
    try:
        make_certs(directory)
        with production_broker(directory / "certs") as started:
            yield started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def production_broker(certs: Path) -> Iterator[Broker]:
    """mosquitto with the production files, on free ports of 127.0.0.1."""
    assert MOSQUITTO is not None
    # not under tmp_path: its parents are private to us, and a root-started mosquitto runs as its own user
    workdir = Path(tempfile.mkdtemp(prefix="locktwin-broker-"))
    (workdir / "data").mkdir()
    shutil.copytree(certs, workdir / "certs")
    passwords = make_passwords(workdir, LOCKTWIN_OPERATOR_PASSWORD="operator-from-env")
    assert set(passwords) == {"bridge", "homeassistant", "dashboard", "fleet"}  # operator's came from the environment
    passwords["operator"] = "operator-from-env"
    assert (workdir / "secrets" / "bridge.password").read_text().strip() == passwords["bridge"]
    shutil.copy(ACL, workdir / "acl")
    ports = {PLAIN: free_port(), TLS: free_port(), MUTUAL_TLS: free_port()}
    (workdir / "mosquitto.conf").write_text(for_test(CONF.read_text(), ports=ports, workdir=workdir))
    _give_to_broker_user(workdir)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], stderr=subprocess.PIPE)
    started = Broker(
        port=ports[PLAIN],
        workdir=workdir,
        passwords=passwords,
        process=proc,
        tls_port=ports[TLS],
        mtls_port=ports[MUTUAL_TLS],
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            for port in ports.values():
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"mosquitto did not start: {err}\n{started.log()}")
            time.sleep(0.05)
    try:
        yield started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


@asynccontextmanager
async def connect(broker: Broker, user: str | None, password: str | None = None) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=password if password is not None else broker.passwords.get(user or ""),
        identifier=f"test-{user}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        yield client


def bridge(broker: Broker, tmp_path: Path, adapter: FakeAdapter | None = None) -> BridgeHarness:
    return BridgeHarness(
        adapter=adapter or FakeAdapter(),
        broker_url=broker.url,
        data_dir=tmp_path / "bridge",
        base_topic=BASE,
        username="bridge",
        password=broker.passwords["bridge"],
    )


async def until(client: aiomqtt.Client, predicate: Any, *, timeout: float = 15.0) -> aiomqtt.Message:
    """The first message that satisfies predicate (a deadline for a broken test, not a measurement)."""
    with anyio.fail_after(timeout):
        async for message in client.messages:
            if predicate(message):
                return message
    raise AssertionError("subscription ended")  # pragma: no cover


def doc(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


def final_of(transaction: str) -> Any:
    def match(message: aiomqtt.Message) -> bool:
        if not isinstance(message.payload, bytes) or b"transaction" not in message.payload:
            return False
        body = doc(message)
        return bool(body.get("transaction") == transaction and body["status"] not in ("accepted",))

    return match


# -- the configuration file itself --------------------------------------------------------------


def test_test_configuration_differs_only_in_port_paths_and_log(tmp_path: Path) -> None:
    original = CONF.read_text().splitlines()
    ports = {PLAIN: 12345, TLS: 12346, MUTUAL_TLS: 12347}
    rewritten = for_test(CONF.read_text(), ports=ports, workdir=tmp_path).splitlines()
    assert len(rewritten) == len(original)
    changed = {_directive(a) for a, b in zip(original, rewritten, strict=True) if a != b}
    assert changed == set(PRODUCTION)
    for key, production in PRODUCTION.items():
        assert [line.strip() for line in original if _directive(line) == key] == production, key
    for a, b in zip(original, rewritten, strict=True):
        if _directive(a) not in PRODUCTION:
            assert a == b
    assert [line for line in rewritten if _directive(line) == "listener"] == [
        f"listener {port} 127.0.0.1" for port in ports.values()
    ]
    assert f"certfile {tmp_path}/certs/server.crt" in rewritten


def test_production_settings_are_on() -> None:
    directives = {line.strip() for line in CONF.read_text().splitlines() if _directive(line)}
    for expected in (
        "allow_anonymous false",
        "persistence true",
        "set_tcp_nodelay true",
        "max_queued_messages 1000000",
        "message_size_limit 16777216",
        "listener 1883 127.0.0.1",  # in clear on the loopback only
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
    ):
        assert expected in directives


def test_make_passwords_is_idempotent(tmp_path: Path) -> None:
    first = make_passwords(tmp_path)
    assert set(first) == set(ROLES)
    assert len(set(first.values())) == len(ROLES) and all(len(p) == 32 for p in first.values())
    passwd = tmp_path / "passwd"
    secret = tmp_path / "secrets" / "bridge.password"
    assert passwd.stat().st_mode & 0o777 == 0o600
    assert secret.stat().st_mode & 0o777 == 0o600
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == list(ROLES)
    assert all(p not in passwd.read_text() for p in first.values())  # hashed
    before = passwd.read_bytes(), secret.read_bytes()
    assert make_passwords(tmp_path, LOCKTWIN_DASHBOARD_PASSWORD="ignored: dashboard exists") == {}
    assert (passwd.read_bytes(), secret.read_bytes()) == before


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("bridge", "wrong"), ("nobody", "whatever"), ("dashboard", "")],
    ids=["anonymous", "wrong-password", "unknown-user", "empty-password"],
)
async def test_connection_without_valid_credentials_is_refused(
    broker: Broker, user: str | None, password: str | None
) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori[sz]ed"):
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=user, password=password, protocol=aiomqtt.ProtocolVersion.V5
        ):
            pass


async def test_every_role_can_connect(broker: Broker) -> None:
    for role in ROLES:
        async with connect(broker, role):
            pass


# -- commands by role ---------------------------------------------------------------------------


async def test_dashboard_unlock_never_reaches_the_vendor(broker: Broker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with bridge(broker, tmp_path, adapter) as h:
        async with connect(broker, "dashboard") as dashboard:
            await dashboard.publish(h.topic("d1", "set"), '{"lock":"UNLOCKED","transaction":"t-dash"}', qos=1)
            await dashboard.publish(h.topic("d1", "request/find"), '{"transaction":"t-dash-find"}', qos=1)
            await dashboard.publish(h.topic("d1", "set"), "UNLOCK", qos=1)
        # the barrier: a permitted command on the same device, after the denied ones were acknowledged
        async with connect(broker, "operator") as operator:
            await operator.publish(h.topic("d1", "get"), '{"transaction":"t-barrier"}', qos=1)
        await h.final("d1", "t-barrier", "get")
        assert adapter.calls == []
        assert adapter.locks["d1"].lock_calls == 0
        answers = [t for t, _, _, _ in h.messages if "/response/" in t]
        assert answers == [h.topic("d1", "response/get")]
        assert h.events("d1", "command") == []


async def test_operator_unlock_succeeds_and_operator_reads_the_answer(broker: Broker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with bridge(broker, tmp_path, adapter) as h, connect(broker, "operator") as operator:
        await operator.subscribe(h.topic("d1", "response/#"), qos=1)
        await operator.publish(h.topic("d1", "set"), '{"lock":"UNLOCKED","transaction":"t-op"}', qos=1)
        final = doc(await until(operator, final_of("t-op")))
        assert final["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock")]
        await operator.subscribe(h.topic("d1", "state"), qos=1)
        state = await until(operator, lambda m: m.topic.matches(h.topic("d1", "state")) and m.retain)
        assert doc(state)["lock"] == "UNLOCKED"


async def test_operator_v5_response_topic_is_private(broker: Broker, tmp_path: Path) -> None:
    reply_topic = f"locktwin-replies/operator/{uuid.uuid4().hex}"
    async with (
        bridge(broker, tmp_path) as h,
        connect(broker, "operator") as operator,
        connect(broker, "homeassistant") as ha,
    ):
        await operator.subscribe(reply_topic, qos=1)
        await ha.subscribe("locktwin-replies/#", qos=1)  # granted by mosquitto 2.0, filtered on delivery
        await ha.subscribe(h.topic("d1", "response/#"), qos=1)
        await operator.publish(
            h.topic("d1", "request/find"),
            '{"transaction":"t-v5"}',
            qos=1,
            properties=v5_reply(reply_topic, b"corr-1"),
        )
        final = await until(operator, final_of("t-v5"))
        assert doc(final)["status"] == "succeeded"
        assert getattr(final.properties, "CorrelationData", None) == b"corr-1"
        # barrier: the bridge answers a later command on a topic homeassistant may read
        await operator.publish(h.topic("d1", "get"), '{"transaction":"t-after"}', qos=1)
        seen = []
        with anyio.fail_after(15):
            async for message in ha.messages:
                seen.append(message.topic.value)
                if message.topic.value == h.topic("d1", "response/get"):
                    break
        assert not [t for t in seen if t.startswith("locktwin-replies/")]


async def test_response_topic_cannot_make_the_bridge_write_the_contract_tree(broker: Broker, tmp_path: Path) -> None:
    spoofed = f"{BASE}/fake/d2/state"
    async with bridge(broker, tmp_path) as h, connect(broker, "operator") as operator:
        await operator.subscribe(spoofed, qos=1)
        await operator.subscribe(h.topic("d1", "response/get"), qos=1)
        await operator.publish(
            h.topic("d1", "request/find"), '{"transaction":"t-spoof"}', qos=1, properties=v5_reply(spoofed, b"x")
        )
        # refused on the default response topic, and nothing executed
        refused = await h.wait_for(lambda: [r for r in h.responses("d1", "find") if r["transaction"] == "t-spoof"])
        assert refused[0]["status"] == "rejected" and refused[0]["error"]["code"] == "INVALID_PAYLOAD"
        # barrier: the answer to a later get comes after anything the bridge sent for the spoof
        await operator.publish(h.topic("d1", "get"), '{"transaction":"t-after"}', qos=1)
        seen = []
        with anyio.fail_after(15):
            async for message in operator.messages:
                seen.append(message)
                if message.topic.value == h.topic("d1", "response/get"):
                    break
        assert not [m for m in seen if m.topic.value == spoofed and b"t-spoof" in (m.payload or b"")]


async def test_homeassistant_can_set_but_not_request(broker: Broker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with bridge(broker, tmp_path, adapter) as h, connect(broker, "homeassistant") as ha:
        await ha.subscribe(h.topic("d1", "response/#"), qos=1)
        await ha.publish(h.topic("d1", "request/find"), '{"transaction":"t-ha-find"}', qos=1)
        await ha.publish(h.topic("d1", "get"), '{"transaction":"t-ha-get"}', qos=1)
        await ha.publish(h.topic("d1", "set"), '{"lock":"UNLOCKED","transaction":"t-ha"}', qos=1)
        final = doc(await until(ha, final_of("t-ha")))
        assert final["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock")]  # no find
        assert h.responses("d1", "find") == [] and h.responses("d1", "get") == []


async def test_homeassistant_discovery_and_status(broker: Broker) -> None:
    config_topic = "homeassistant/lock/locktwin_fake_d1/config"
    async with connect(broker, "bridge") as bridge_client, connect(broker, "homeassistant") as ha:
        await bridge_client.subscribe("homeassistant/status", qos=1)
        await bridge_client.publish(config_topic, '{"name":"d1"}', qos=1, retain=True)
        await ha.subscribe("homeassistant/#", qos=1)
        assert doc(await until(ha, lambda m: m.topic.value == config_topic)) == {"name": "d1"}
        await ha.publish("homeassistant/status", "online", qos=1)
        status = await until(bridge_client, lambda m: m.topic.value == "homeassistant/status")
        assert status.payload == b"online"


# -- the fleet service ---------------------------------------------------------------------------


@asynccontextmanager
async def fleet_service(broker: Broker, tmp_path: Path) -> AsyncIterator[FleetService]:
    """The fleet service connected as its own role, ``fleet``, on base topic ``locktwin``."""
    service = FleetService(
        settings=FleetSettings(http_port=0, settle_quiet=0.3, client_id="locktwin-fleet-acl"),
        mqtt=MqttSettings(url=broker.url, username="fleet", password=SecretStr(broker.passwords["fleet"])),
        data_dir=tmp_path / "fleet",
        base_topic=BASE,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(service.run)
        with anyio.fail_after(20):
            await service.ready.wait()
            await service.connected.wait()
        try:
            yield service
        finally:
            tg.cancel_scope.cancel()


async def test_dashboard_cannot_create_a_job_and_the_fleet_role_can(broker: Broker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    job = {
        "target": {"devices": ["fake/d1"]},
        "operation": {"kind": "set", "field": "lock", "value": "UNLOCKED"},
    }
    async with (
        bridge(broker, tmp_path, adapter),
        fleet_service(broker, tmp_path) as service,
        connect(broker, "dashboard") as dashboard,
    ):
        await dashboard.subscribe(f"{BASE}/fleet/#", qos=1)
        await dashboard.publish(f"{BASE}/fleet/request/job_create", json.dumps({**job, "transaction": "t-dash"}), qos=1)
        # the barrier: an operator's request, after the denied one was acknowledged
        async with connect(broker, "operator") as operator:
            await operator.publish(f"{BASE}/fleet/request/job_list", '{"transaction":"t-list"}', qos=1)
        listed = doc(await until(dashboard, lambda m: m.topic.value == f"{BASE}/fleet/response/job_list"))
        assert listed["transaction"] == "t-list" and listed["data"]["jobs"] == []
        assert service.jobs.jobs == {} and adapter.calls == []

        async with connect(broker, "fleet") as fleet:
            await fleet.publish(
                f"{BASE}/fleet/request/job_create", json.dumps({**job, "transaction": "t-fleet"}), qos=1
            )
        created = doc(await until(dashboard, lambda m: m.topic.value == f"{BASE}/fleet/response/job_create"))
        assert created["status"] == "succeeded", created
        job_topic = f"{BASE}/fleet/jobs/{created['data']['id']}"

        def completed(message: aiomqtt.Message) -> bool:  # a dashboard reads the job's progress
            return message.topic.value == job_topic and doc(message)["status"] == "COMPLETED"

        done = doc(await until(dashboard, completed))
        assert done["counts"]["SUCCEEDED"] == 1
        assert adapter.calls == [("d1", "unlock")]  # the fleet role sends /set, and reads its answers


# -- reading ------------------------------------------------------------------------------------


async def test_dashboard_receives_retained_states_and_cannot_overwrite_them(broker: Broker, tmp_path: Path) -> None:
    async with bridge(broker, tmp_path) as h:
        for device in ("d1", "d2"):
            assert (await h.get(device))["status"] == "succeeded"  # a first read from the vendor
            await h.wait_retained(device, "state", lambda s: s["lock"] == "LOCKED")
        async with connect(broker, "dashboard") as dashboard:
            await dashboard.publish(h.topic("d1", "state"), '{"lock":"UNLOCKED"}', qos=1, retain=True)
        async with connect(broker, "dashboard") as dashboard:
            await dashboard.subscribe(f"{BASE}/#", qos=1)
            wanted = {h.topic(d, leaf) for d in ("d1", "d2") for leaf in ("state", "twin")}
            wanted |= {f"{BASE}/bridge/fake/state", f"{BASE}/bridge/fake/devices"}
            retained: dict[str, bytes] = {}
            with anyio.fail_after(15):
                async for message in dashboard.messages:
                    if message.retain and isinstance(message.payload, bytes):
                        retained[message.topic.value] = message.payload
                    if wanted <= set(retained):
                        break
        assert json.loads(retained[h.topic("d1", "state")])["lock"] == "LOCKED"
        assert json.loads(retained[h.topic("d2", "state")])["lock"] == "LOCKED"
        assert json.loads(retained[h.topic("d1", "twin")])["reported"]["lock"] == "LOCKED"
        assert retained[f"{BASE}/bridge/fake/state"] == b"online"


async def test_large_fleet_device_list_reaches_the_dashboard_in_pages(broker: Broker, tmp_path: Path) -> None:
    devices = [f"vehicle-{i:05d}" for i in range(2000)]  # ~300 KB of list
    adapter = FakeAdapter(settings=FakeSettings(devices=devices))
    async with bridge(broker, tmp_path, adapter) as h:
        topic = f"{BASE}/bridge/fake/devices"
        first = await h.wait_for(lambda: h.retained.get(topic), timeout=60)
        pages = json.loads(first)["pages"]
        assert pages > 1
        async with connect(broker, "dashboard") as dashboard:
            await dashboard.subscribe(f"{topic}/#", qos=1)  # page 0 and the others
            got: dict[int, Any] = {}
            while len(got) < pages:
                message = await until(dashboard, lambda m: m.topic.value.startswith(topic))
                assert isinstance(message.payload, bytes) and len(message.payload) <= 64 * 1024
                body = doc(message)
                got[body["page"]] = body
            assert [d["id"] for n in range(pages) for d in got[n]["devices"]] == devices


async def test_payload_over_the_bridge_limit_is_answered_invalid(broker: Broker, tmp_path: Path) -> None:
    async with bridge(broker, tmp_path) as h, connect(broker, "operator") as operator:
        await operator.subscribe(h.topic("d1", "response/set"), qos=1)
        body = json.dumps({"lock": "UNLOCKED", "transaction": "t-big", "pad": "x" * (100 * 1024)})
        await operator.publish(h.topic("d1", "set"), body, qos=1)
        answer = doc(await until(operator, lambda m: True))
        assert answer["status"] == "rejected"
        assert answer["error"]["code"] == "INVALID_PAYLOAD"


# -- the bridge container's healthcheck ---------------------------------------------------------


async def _healthcheck(broker: Broker, vendor: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "LOCKTWIN_MQTT__URL": broker.url,
        "LOCKTWIN_MQTT__USERNAME": "bridge",
        "LOCKTWIN_MQTT__PASSWORD_FILE": str(broker.workdir / "secrets" / "bridge.password"),
        "PYTHONPATH": str(REPO),
    }
    with anyio.fail_after(30):
        return await anyio.run_process([sys.executable, str(HEALTHCHECK), vendor], env=env, check=False)


async def test_healthcheck_follows_the_bridge_state(broker: Broker, tmp_path: Path) -> None:
    assert (await _healthcheck(broker, "fake")).returncode == 1  # never announced
    async with bridge(broker, tmp_path):
        assert (await _healthcheck(broker, "fake")).returncode == 0
        assert (await _healthcheck(broker, "other")).returncode == 1
    result = await _healthcheck(broker, "fake")  # the bridge said offline on its way out
    assert result.returncode == 1
    assert b"offline" in result.stderr
