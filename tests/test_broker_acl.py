"""The production broker setup (``mosquitto/``) against a real mosquitto and a real bridge.

Each test starts mosquitto with exactly ``mosquitto/mosquitto.conf`` (only the listeners' ports, the
paths and the log destination are rewritten, see :func:`for_test`), ``mosquitto/acl`` (plus the block
of the test's own vendor, ``fake``, written by the rule every vendor's block follows: :func:`vendor_block`),
a password file made by ``mosquitto/make-passwords`` and certificates made by ``mosquitto/make-certs``
(its TLS listeners are tested in tests/transport/), then drives a bridge (``BridgeHarness`` with the fake
adapter on base topic ``locktwin``, connected as ``bridge-fake``) with clients of the other roles.

A publish the ACL denies is dropped by the broker (a v5 publisher gets PUBACK "not authorized").
To show that nothing arrived without waiting on a clock, each negative check is followed by a
permitted command on the same device: the bridge handles one device's commands in order, so once
the later command's final answer is in, an earlier one that had got through would have been seen.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest
from paho.mqtt.client import topic_matches_sub
from pydantic import SecretStr

from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.config import LocktwinSettings, MqttSettings
from twin.fleet.service import FleetService
from twin.fleet.settings import FleetSettings
from twin.homeassistant import HomeAssistantSettings
from twin.homeassistant_legacy import clear_legacy_discovery
from twin.registry import ADAPTERS
from twin.testing import BridgeHarness, free_port, v5_reply

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "mosquitto" / "mosquitto.conf"
ACL = REPO / "mosquitto" / "acl"
MAKE_PASSWORDS = REPO / "mosquitto" / "make-passwords"
MAKE_CERTS = REPO / "mosquitto" / "make-certs"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
#: every vendor's bridge has a user of its own (bridge-<vendor>); then the people's roles, and the
#: fleet service's
BRIDGE_ROLES = tuple(f"bridge-{vendor}" for vendor in ADAPTERS)
OTHERS = ("operator", "homeassistant", "dashboard", "fleet")
ROLES = (*BRIDGE_ROLES, *OTHERS)
BASE = "locktwin"
#: the vendor of tests.fake_adapter, given a block and a user like a registered vendor's
TEST_VENDOR = "fake"
TEST_BRIDGE = f"bridge-{TEST_VENDOR}"

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


def vendor_block(vendor: str) -> str:
    """The acl block of one vendor's bridge: only its own vendor's topics (mosquitto/acl)."""
    return "".join(
        line + "\n"
        for line in (
            f"user bridge-{vendor}",
            f"topic readwrite {BASE}/{vendor}/#",
            f"topic readwrite {BASE}/bridge/{vendor}/#",
            f"topic write homeassistant/+/locktwin_{vendor}/#",
            f"topic write homeassistant/+/locktwin_bridge_{vendor}/#",
            "topic read homeassistant/status",
            "topic write locktwin-replies/#",
        )
    )


def make_passwords(directory: Path, *args: str, **env: str) -> dict[str, str]:
    """Run make-passwords; the passwords it generated, by role."""
    out = subprocess.run(
        [str(MAKE_PASSWORDS), "--dir", str(directory), *args],
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
    passwords = make_passwords(workdir, "--vendor", TEST_VENDOR, LOCKTWIN_OPERATOR_PASSWORD="operator-from-env")
    assert set(passwords) == {*ROLES, TEST_BRIDGE} - {"operator"}  # operator's came from the environment
    passwords["operator"] = "operator-from-env"
    for role in (*BRIDGE_ROLES, TEST_BRIDGE):
        assert (workdir / "secrets" / f"{role}.password").read_text().strip() == passwords[role]
    (workdir / "acl").write_text(ACL.read_text() + "\n" + vendor_block(TEST_VENDOR))
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


def bridge(
    broker: Broker, tmp_path: Path, adapter: FakeAdapter | None = None, *, discovery: bool = True
) -> BridgeHarness:
    return BridgeHarness(
        adapter=adapter or FakeAdapter(),
        broker_url=broker.url,
        data_dir=tmp_path / "bridge",
        base_topic=BASE,
        username=TEST_BRIDGE,
        password=broker.passwords[TEST_BRIDGE],
        homeassistant=HomeAssistantSettings(enabled=discovery),  # the production prefix, homeassistant/
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
    secrets = {role: tmp_path / "secrets" / f"{role}.password" for role in BRIDGE_ROLES}
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == sorted(p.name for p in secrets.values())
    assert passwd.stat().st_mode & 0o777 == 0o600
    for role, secret in secrets.items():
        assert secret.stat().st_mode & 0o777 == 0o600
        assert secret.read_text().strip() == first[role]
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == list(ROLES)
    assert all(p not in passwd.read_text() for p in first.values())  # hashed
    before = passwd.read_bytes(), [s.read_bytes() for s in secrets.values()]
    assert make_passwords(tmp_path, LOCKTWIN_DASHBOARD_PASSWORD="ignored: dashboard exists") == {}
    assert (passwd.read_bytes(), [s.read_bytes() for s in secrets.values()]) == before


def test_make_passwords_knows_every_registered_vendor() -> None:
    listed = subprocess.run([str(MAKE_PASSWORDS), "--list-roles"], capture_output=True, text=True, check=True)
    assert tuple(listed.stdout.split()) == ROLES
    more = subprocess.run(
        [str(MAKE_PASSWORDS), "--list-roles", "--vendor", "acme"], capture_output=True, text=True, check=True
    )
    assert more.stdout.split() == [*BRIDGE_ROLES, "bridge-acme", *OTHERS]


def test_make_passwords_removes_the_shared_bridge_user_of_earlier_versions(tmp_path: Path) -> None:
    make_passwords(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_text(passwd.read_text() + "bridge:$7$101$old-hash\n")
    (tmp_path / "secrets" / "bridge.password").write_text("the old shared password\n")
    assert make_passwords(tmp_path) == {}
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == list(ROLES)
    assert not (tmp_path / "secrets" / "bridge.password").exists()


def test_every_vendor_block_gives_its_bridge_only_its_own_vendor() -> None:
    acl = ACL.read_text()
    for vendor in ADAPTERS:
        assert vendor_block(vendor) in acl, f"mosquitto/acl needs, for {vendor}:\n{vendor_block(vendor)}"
    users = re.findall(r"^user (\S+)$", acl, flags=re.MULTILINE)
    assert users == [*BRIDGE_ROLES, *OTHERS]


def test_no_role_but_the_bridges_may_read_command_topics() -> None:
    """Commands carry their sender's Response Topic and Correlation Data, and actions' arguments."""
    grants: dict[str, list[tuple[str, str]]] = {}
    user = None
    for line in ACL.read_text().splitlines():
        words = line.split()
        if words[:1] == ["user"]:
            user = words[1]
        elif words[:1] == ["topic"] and user is not None:
            grants.setdefault(user, []).append((words[1], words[2]) if len(words) == 3 else ("readwrite", words[1]))
        elif words[:1] == ["pattern"]:
            user = None  # patterns apply to every user: checked below as their own
            grants.setdefault("<pattern>", []).append((words[1], words[2]))
    commands = [f"{BASE}/segway/d1/set", f"{BASE}/okai/d1/get", f"{BASE}/tuya/d1/request/issue_card"]
    for role, rules in grants.items():
        readable = [sub for access, sub in rules if access in ("read", "readwrite")]
        for command in commands:
            reads = any(topic_matches_sub(sub, command) for sub in readable)
            vendor = command.split("/")[1]
            assert reads == (role == f"bridge-{vendor}"), (role, command)


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), (TEST_BRIDGE, "wrong"), ("nobody", "whatever"), ("dashboard", "")],
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
        await ha.subscribe(h.topic("d1", "event"), qos=1)
        await operator.publish(
            h.topic("d1", "request/find"),
            '{"transaction":"t-v5"}',
            qos=1,
            properties=v5_reply(reply_topic, b"corr-1"),
        )
        final = await until(operator, final_of("t-v5"))
        assert doc(final)["status"] == "succeeded"
        assert getattr(final.properties, "CorrelationData", None) == b"corr-1"
        # barrier: an event of a later command, on a topic homeassistant may read
        await operator.publish(h.topic("d1", "request/find"), '{"transaction":"t-after"}', qos=1)
        seen = []
        with anyio.fail_after(15):
            async for message in ha.messages:
                seen.append(message.topic.value)
                if message.topic.value == h.topic("d1", "event") and doc(message)["data"]["transaction"] == "t-after":
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
        await ha.subscribe(h.topic("d1", "#"), qos=1)
        await ha.publish(h.topic("d1", "request/find"), '{"transaction":"t-ha-find"}', qos=1)
        await ha.publish(h.topic("d1", "get"), '{"transaction":"t-ha-get"}', qos=1)
        await ha.publish(h.topic("d1", "set"), '{"lock":"UNLOCKED","transaction":"t-ha"}', qos=1)
        assert (await h.final("d1", "t-ha"))["status"] == "succeeded"
        # homeassistant follows its command by the device's events and state, not by answers
        seen = []
        with anyio.fail_after(15):
            async for message in ha.messages:
                seen.append(message.topic.value)
                body = doc(message) if message.topic.value == h.topic("d1", "event") else {}
                if body.get("data", {}).get("transaction") == "t-ha" and body["data"]["to"] == "succeeded":
                    break
        assert adapter.calls == [("d1", "unlock")]  # no find
        assert h.responses("d1", "find") == [] and h.responses("d1", "get") == []
        assert not [t for t in seen if "/response/" in t or t.endswith(("/set", "/get")) or "/request/" in t]


async def test_homeassistant_discovery_and_status(broker: Broker) -> None:
    config_topic = "homeassistant/lock/locktwin_fake/d1/config"
    async with connect(broker, TEST_BRIDGE) as bridge_client, connect(broker, "homeassistant") as ha:
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
        connect(broker, "operator") as operator,
    ):
        await dashboard.subscribe(f"{BASE}/fleet/#", qos=1)  # its ACL lets job documents through
        await operator.subscribe(f"{BASE}/fleet/response/+", qos=1)  # answers: roles that may ask
        await dashboard.publish(f"{BASE}/fleet/request/job_create", json.dumps({**job, "transaction": "t-dash"}), qos=1)
        # the barrier: an operator's request, after the denied one was acknowledged
        await operator.publish(f"{BASE}/fleet/request/job_list", '{"transaction":"t-list"}', qos=1)
        listed = doc(await until(operator, lambda m: m.topic.value == f"{BASE}/fleet/response/job_list"))
        assert listed["transaction"] == "t-list" and listed["data"]["jobs"] == []
        assert service.jobs.jobs == {} and adapter.calls == []

        async with connect(broker, "fleet") as fleet:
            await fleet.publish(
                f"{BASE}/fleet/request/job_create", json.dumps({**job, "transaction": "t-fleet"}), qos=1
            )
        created = doc(await until(operator, lambda m: m.topic.value == f"{BASE}/fleet/response/job_create"))
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
        "LOCKTWIN_MQTT__USERNAME": TEST_BRIDGE,
        "LOCKTWIN_MQTT__PASSWORD_FILE": str(broker.workdir / "secrets" / f"{TEST_BRIDGE}.password"),
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


# -- issue 16: forged answers, reply topics, legacy discovery -----------------------------------


def is_command(topic: str) -> bool:
    """``<base>/<vendor>/<device>/set``, ``.../get`` or ``.../request/<action>``."""
    parts = topic.split("/")
    return (len(parts) == 4 and parts[3] in ("set", "get")) or (len(parts) == 5 and parts[3] == "request")


def _leaks(message: aiomqtt.Message, secrets: tuple[bytes, ...]) -> bool:
    """Whether a message shows any of ``secrets``, in its topic, payload or properties."""
    props = message.properties
    shown = [message.topic.value.encode(), message.payload if isinstance(message.payload, bytes) else b""]
    for name in ("ResponseTopic", "CorrelationData", "UserProperty"):
        value = getattr(props, name, None) if props is not None else None
        shown.append(
            value.encode() if isinstance(value, str) else value if isinstance(value, bytes) else repr(value).encode()
        )
    return any(secret in part for secret in secrets for part in shown)


async def seen_until_event(client: aiomqtt.Client, event_topic: str, transaction: str) -> list[aiomqtt.Message]:
    """Every message ``client`` got until the first event of ``transaction`` on ``event_topic``.

    The barrier of these tests: a command sent after the others were acknowledged by the broker
    (which routes a message to its subscribers before acknowledging it), so once its event is in,
    anything the broker would have delivered of the earlier ones is in too."""
    seen = []
    with anyio.fail_after(15):
        async for message in client.messages:
            seen.append(message)
            if message.topic.value == event_topic and doc(message)["data"].get("transaction") == transaction:
                return seen
    raise AssertionError("subscription ended")  # pragma: no cover


@pytest.mark.parametrize(
    ("victim", "spies"),
    [("operator", ("homeassistant", "dashboard")), ("homeassistant", ("operator", "dashboard"))],
)
async def test_forged_answers_in_another_roles_reply_topic_fail(
    broker: Broker, tmp_path: Path, victim: str, spies: tuple[str, ...]
) -> None:
    """Issue 16, replayed: a role read another client's ``/set`` with its v5 Response Topic and
    Correlation Data, then sent an invalid ``/set`` with the same transaction, that Response Topic
    and that correlation; the private topic got ``accepted``, the forged ``rejected``, then
    ``succeeded``. Now no role but the bridge reads command topics: the spies never see the Response
    Topic nor the correlation, and what they can send lands nowhere near the victim's answers."""
    private = f"locktwin-replies/{victim}/{uuid.uuid4().hex}"
    correlation = b"op-corr-42"
    async with AsyncExitStack() as stack:
        h = await stack.enter_async_context(bridge(broker, tmp_path))
        sender = await stack.enter_async_context(connect(broker, victim))
        watchers = {spy: await stack.enter_async_context(connect(broker, spy)) for spy in spies}
        await sender.subscribe(private, qos=1)
        for watcher in watchers.values():
            await watcher.subscribe("#", qos=1)
            await watcher.subscribe(f"{BASE}/#", qos=1)
        await sender.publish(
            h.topic("d1", "set"),
            '{"lock":"UNLOCKED","transaction":"op-real-1"}',
            qos=1,
            properties=v5_reply(private, correlation),
        )
        await sender.publish(h.topic("d2", "set"), '{"lock":"LOCKED","transaction":"barrier-1"}', qos=1)
        for spy, watcher in watchers.items():
            seen = await seen_until_event(watcher, h.topic("d2", "event"), "barrier-1")
            assert not [m.topic.value for m in seen if is_command(m.topic.value)], spy
            assert not [m.topic.value for m in seen if _leaks(m, (correlation, private.encode()))], spy
        # The attacker's best: the transaction (events name it, for dashboards), no reply topic to use.
        attacker = next(watchers[s] for s in spies if s != "dashboard")
        await attacker.publish(h.topic("d1", "set"), '{"lock":"SIDEWAYS","transaction":"op-real-1"}', qos=1)
        answers = []

        async def answers_until(transaction: str) -> None:
            with anyio.fail_after(15):
                async for message in sender.messages:
                    body = doc(message)
                    answers.append((body["transaction"], body["status"], message.properties.CorrelationData))
                    if body["transaction"] == transaction and body["status"] != "accepted":
                        return

        await answers_until("op-real-1")
        # barrier on the private topic: a later command of the victim, answered there too
        await sender.publish(
            h.topic("d1", "set"),
            '{"lock":"LOCKED","transaction":"barrier-2"}',
            qos=1,
            properties=v5_reply(private, b"barrier-2"),
        )
        await answers_until("barrier-2")
    assert answers == [
        ("op-real-1", "accepted", correlation),
        ("op-real-1", "succeeded", correlation),
        ("barrier-2", "accepted", b"barrier-2"),
        ("barrier-2", "succeeded", b"barrier-2"),
    ]


@pytest.mark.parametrize("discovery", [True, False], ids=["discovery-on", "discovery-off"])
async def test_discovery_prefix_is_never_a_response_topic(broker: Broker, tmp_path: Path, discovery: bool) -> None:
    """Issue 16: with discovery off, an operator's Response Topic homeassistant/lock/.../config was
    written by the bridge (a topic its user may write: its own vendor's discovery configs)."""
    target = "homeassistant/lock/locktwin_fake/d1/config"
    adapter = FakeAdapter()
    async with (
        bridge(broker, tmp_path, adapter, discovery=discovery) as h,
        connect(broker, "operator") as operator,
        connect(broker, "homeassistant") as ha,
    ):
        await ha.subscribe(target, qos=1)
        await ha.subscribe(h.topic("d1", "event"), qos=1)
        await operator.subscribe(h.topic("d1", "response/find"), qos=1)
        await operator.publish(
            h.topic("d1", "request/find"), '{"transaction":"t-config"}', qos=1, properties=v5_reply(target, b"c")
        )
        refused = doc(await until(operator, final_of("t-config")))
        assert refused["status"] == "rejected" and refused["error"]["code"] == "INVALID_PAYLOAD"
        await operator.publish(h.topic("d1", "request/find"), '{"transaction":"t-after"}', qos=1)
        seen = await seen_until_event(ha, h.topic("d1", "event"), "t-after")
        on_target = [doc(m) for m in seen if m.topic.value == target]
        assert {config["unique_id"] for config in on_target} == ({"locktwin_fake_d1_lock"} if discovery else set())
        assert adapter.calls.count(("d1", "find")) == 1  # t-after only


async def test_only_a_role_that_may_write_the_prefix_clears_legacy_configs(broker: Broker, tmp_path: Path) -> None:
    """A vendor's bridge may not write the old per-device discovery topics (its user's grants name
    locktwin_<vendor> as a level of its own); homeassistant may, and ``clear-legacy`` uses it."""
    legacy = "homeassistant/lock/locktwin_fake_d1/lock/config"
    async with (
        bridge(broker, tmp_path) as h,
        connect(broker, "homeassistant") as ha,
        connect(broker, TEST_BRIDGE) as bridge_client,
    ):
        await ha.publish(legacy, '{"name":"old layout"}', qos=1, retain=True)  # as an earlier bridge left it
        await bridge_client.publish(legacy, b"", qos=1, retain=True)  # denied: dropped by the broker
        await h.wait_for(lambda: h.retained.get(f"{BASE}/bridge/fake/devices"))
        as_ha = LocktwinSettings(
            base_topic=BASE,
            mqtt=MqttSettings(
                url=broker.url, username="homeassistant", password=SecretStr(broker.passwords["homeassistant"])
            ),
        )
        result = await clear_legacy_discovery(settings=as_ha)
        assert result.found == [legacy] and result.remaining == []
        assert result.devices == {"fake": 2}
