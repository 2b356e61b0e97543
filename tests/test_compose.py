"""compose.yaml, compose.sim.yaml, the Dockerfile and deploy/ checked without Docker.

What can be known from the files: every locktwin command is one the CLI accepts for a registered
vendor, every host path mounted exists (or is written by make-passwords or make-certs and ignored by
git), every named volume and secret is declared, every service has a healthcheck, the bridges reach
the broker over TLS on a listener the broker's configuration has, with the CA the broker's
certificate comes from, the image's entrypoint is ``locktwin``, and the simulator override gives
each bridge its simulator kit's settings. tests/transport/test_make_certs.py checks that make-certs'
server certificate is valid for the name the bridges use.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from twin.cli import parser
from twin.config import load_settings
from twin.registry import ADAPTERS, load_adapter_class

REPO = Path(__file__).resolve().parent.parent
#: every registered vendor has a bridge service, a simulator service and a table in deploy/locktwin.toml
VENDORS = tuple(ADAPTERS)
IMAGE = "locktwin:latest"
CONFIG_IN_CONTAINER = "/etc/locktwin/locktwin.toml"
CA_SECRET = "/run/secrets/mqtt_ca"
BRIDGE_URL = "mqtts://mosquitto:8883"
HEALTHCHECK_IN_IMAGE = "/usr/local/lib/locktwin/healthcheck.py"
#: host files make-passwords and make-certs write (never in the repository), by the script
GENERATED = {
    "mosquitto/passwd": "make-passwords",
    **{f"mosquitto/secrets/bridge-{v}.password": "make-passwords" for v in ADAPTERS},
    "mosquitto/certs/ca.crt": "make-certs",
    "mosquitto/certs/server.crt": "make-certs",
    "mosquitto/certs/server.key": "make-certs",
}


def bridge_user(vendor: str) -> str:
    """Each vendor's bridge has its own broker user (mosquitto/acl)."""
    return f"bridge-{vendor}"


def bridge_secret(vendor: str) -> str:
    return f"/run/secrets/mqtt_bridge_{vendor}_password"


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / name).read_text())
    assert isinstance(doc, dict)
    return doc


COMPOSE = load("compose.yaml")
SIM = load("compose.sim.yaml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LOCKTWIN_SERVICES = sorted(name for name, svc in SERVICES.items() if svc.get("image") == IMAGE)


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of the short-syntax volumes."""
    out = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), "use the short syntax: source:target[:mode]"
        source, target, *mode = entry.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


# -- services -----------------------------------------------------------------------------------


def test_services() -> None:
    assert set(SERVICES) == {"mosquitto", *VENDORS, *(f"{v}-sim" for v in VENDORS)}
    assert sorted(set(SERVICES) - {"mosquitto"}) == LOCKTWIN_SERVICES
    for name in LOCKTWIN_SERVICES:
        assert SERVICES[name]["build"]["context"] == "."


@pytest.mark.parametrize("vendor", VENDORS)
def test_bridge_command_is_accepted_by_the_cli(vendor: str) -> None:
    service = SERVICES[vendor]
    args = parser().parse_args(service["command"])
    assert args.command == "run"
    assert args.vendors == [vendor]
    assert str(args.config) == CONFIG_IN_CONTAINER
    load_adapter_class(vendor)  # importable in this environment, as in the image


@pytest.mark.parametrize("vendor", VENDORS)
def test_simulator_command_is_accepted_by_the_cli(vendor: str) -> None:
    service = SERVICES[f"{vendor}-sim"]
    assert service["profiles"] == ["sim"]
    args = parser().parse_args(service["command"])
    assert (args.command, args.vendor, args.host, args.port) == ("simulate", vendor, "0.0.0.0", 8080)


def test_every_command_parses() -> None:
    for name in LOCKTWIN_SERVICES:
        command = SERVICES[name]["command"]
        assert isinstance(command, list), f"{name}: exec form, no shell"
        try:
            parser().parse_args(command)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{name}: locktwin refuses {shlex.join(command)} ({exc})")


@pytest.mark.parametrize("vendor", VENDORS)
def test_bridge_environment_and_secret(vendor: str) -> None:
    service = SERVICES[vendor]
    env = service["environment"]
    assert env["LOCKTWIN_MQTT__URL"] == BRIDGE_URL
    assert env["LOCKTWIN_MQTT__CA_FILE"] == CA_SECRET
    assert env["LOCKTWIN_MQTT__USERNAME"] == bridge_user(vendor)
    assert env["LOCKTWIN_MQTT__PASSWORD_FILE"] == bridge_secret(vendor)
    assert "LOCKTWIN_MQTT__PASSWORD" not in env
    assert "LOCKTWIN_MQTT__TLS_INSECURE" not in env
    assert service["secrets"] == [Path(bridge_secret(vendor)).name, Path(CA_SECRET).name]
    # the secret is the password make-passwords keeps for that user, and nobody else's
    assert COMPOSE["secrets"][Path(bridge_secret(vendor)).name] == {
        "file": f"./mosquitto/secrets/{bridge_user(vendor)}.password"
    }
    assert service["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert ("./deploy/locktwin.toml", CONFIG_IN_CONTAINER, "ro") in mounts(service)
    data = [(s, t) for s, t, _ in mounts(service) if t == "/var/lib/locktwin"]
    assert data == [(f"{vendor}-data", "/var/lib/locktwin")]
    for env_file in service.get("env_file", []):
        assert env_file == {"path": f"./deploy/{vendor}.env", "required": False}


def test_the_example_configuration_alone_reaches_the_broker_over_tls() -> None:
    mqtt = load_settings(REPO / "deploy" / "locktwin.toml").mqtt
    assert mqtt.url == BRIDGE_URL and mqtt.ca_file == Path(CA_SECRET)


def test_the_bridges_settings_load_as_compose_gives_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in SERVICES["segway"]["environment"].items():
        monkeypatch.setenv(key, value)
    settings = load_settings(REPO / "deploy" / "locktwin.toml")
    assert settings.mqtt.url == BRIDGE_URL and settings.mqtt.username == "bridge-segway"
    assert settings.mqtt.tls and (settings.mqtt.host, settings.mqtt.port) == ("mosquitto", 8883)
    assert settings.mqtt.ca_file == Path(CA_SECRET) and not settings.mqtt.tls_insecure
    assert settings.mqtt.password_file == Path(bridge_secret("segway"))
    assert settings.data_dir == Path("/var/lib/locktwin")
    assert set(settings.vendors) == set(VENDORS)


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_configuration_alone_gives_each_bridge_its_own_user(vendor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without compose's variables (several bridges in one process, systemd), ``{vendor}`` in the
    file gives each bridge the user and secret compose gives it."""
    for key in [k for k in os.environ if k.startswith("LOCKTWIN_")]:
        monkeypatch.delenv(key)
    mqtt = load_settings(REPO / "deploy" / "locktwin.toml").mqtt.for_vendor(vendor)
    env = SERVICES[vendor]["environment"]
    assert mqtt.username == env["LOCKTWIN_MQTT__USERNAME"] == bridge_user(vendor)
    assert mqtt.password_file == Path(env["LOCKTWIN_MQTT__PASSWORD_FILE"])


@pytest.mark.parametrize("vendor", VENDORS)
def test_example_vendor_table_has_only_known_keys(vendor: str) -> None:
    table = load_settings(REPO / "deploy" / "locktwin.toml").vendors[vendor]
    fields = set(load_adapter_class(vendor).settings_model.model_fields)
    assert set(table) <= fields


# -- mounts, volumes, secrets -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_host_paths_exist_and_named_volumes_are_declared(name: str) -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for source, target, _mode in mounts(SERVICES[name]):
        assert target.startswith("/")
        if source.startswith(("./", "/")):
            assert source.startswith("./"), f"{name}: host paths relative to the repository"
            assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
        else:
            assert source in declared, f"{name}: volume {source} is not declared"


def make_passwords_roles() -> list[str]:
    script = REPO / "mosquitto" / "make-passwords"
    return subprocess.run([str(script), "--list-roles"], capture_output=True, text=True, check=True).stdout.split()


def test_secrets_are_declared_and_generated_by_make_passwords_or_make_certs() -> None:
    declared = COMPOSE["secrets"]
    used = {s for svc in SERVICES.values() for s in svc.get("secrets", [])}
    assert used == set(declared)
    ignored = (REPO / "mosquitto" / ".gitignore").read_text().split()
    for secret in declared.values():
        path = secret["file"].removeprefix("./")
        assert path in GENERATED
        script = (REPO / "mosquitto" / GENERATED[path]).read_text()
        relative = path.removeprefix("mosquitto/")
        assert relative in ignored or f"{relative.split('/')[0]}/" in ignored
        folder, _, name = relative.rpartition("/")
        assert relative in script or (folder in script and name.split(".")[0] in script) or "$1.password" in script, (
            path
        )
    # the script writes passwd and secrets/<role>.password for every bridge role it knows
    passwords = (REPO / "mosquitto" / "make-passwords").read_text()
    assert '"$dir/passwd"' in passwords and 'echo "$dir/secrets/$1.password"' in passwords
    assert [r for r in make_passwords_roles() if r.startswith("bridge-")] == [bridge_user(v) for v in ADAPTERS]


def test_every_declared_volume_is_used() -> None:
    used = {s for svc in SERVICES.values() for s, _, _ in mounts(svc) if not s.startswith(".")}
    assert used == set(COMPOSE["volumes"])


# -- healthchecks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check.get("disable") is not True
    for key in ("interval", "timeout", "retries"):
        assert key in check


@pytest.mark.parametrize("vendor", VENDORS)
def test_bridge_healthcheck_runs_the_script_in_the_image(vendor: str) -> None:
    test = SERVICES[vendor]["healthcheck"]["test"]
    assert test == ["CMD", "python", HEALTHCHECK_IN_IMAGE, vendor, "--config", CONFIG_IN_CONTAINER]
    assert ("COPY", f"deploy/healthcheck.py {HEALTHCHECK_IN_IMAGE}") in dockerfile()


# -- the broker service -------------------------------------------------------------------------


def test_mosquitto_mounts_the_configuration_the_conf_names() -> None:
    service = SERVICES["mosquitto"]
    assert service["image"] == "eclipse-mosquitto:2"
    by_target = {t: (s, m) for s, t, m in mounts(service)}
    assert by_target["/mosquitto/config/mosquitto.conf"] == ("./mosquitto/mosquitto.conf", "ro")
    assert by_target["/run/locktwin/acl"] == ("./mosquitto/acl", "ro")
    assert by_target["/mosquitto/data"] == ("mosquitto-data", "rw")
    conf = {
        line.split()[0]: line.split(None, 1)[1]
        for line in (REPO / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert conf["persistence_location"].rstrip("/") in by_target
    # passwd, acl, the CA and the broker's certificate and key are copied into place for the
    # broker's user by the command: to exactly the paths its TLS listeners name
    command = " ".join(service["command"])
    assert f"cp /run/secrets/mosquitto_passwd {conf['password_file']}" in command
    assert f"cp /run/locktwin/acl {conf['acl_file']}" in command
    assert f"cp /run/secrets/mqtt_ca {conf['cafile']}" in command
    assert f"cp /run/secrets/mosquitto_server_cert {conf['certfile']}" in command
    assert f"cp /run/secrets/mosquitto_server_key {conf['keyfile']}" in command
    assert "exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf" in command
    assert service["secrets"] == ["mosquitto_passwd", "mqtt_ca", "mosquitto_server_cert", "mosquitto_server_key"]


def _listeners() -> dict[int, list[str]]:
    """The broker's listeners by port, with the directives that follow each."""
    listeners: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in (REPO / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("listener "):
            current = listeners.setdefault(int(line.split()[1]), [line])
        elif current is not None and line.split()[0] in (
            "cafile",
            "certfile",
            "keyfile",
            "tls_version",
            "require_certificate",
            "use_identity_as_username",
        ):
            current.append(line)
    return listeners


def test_the_broker_is_published_only_on_its_tls_listeners() -> None:
    listeners = _listeners()
    published = [entry.split(":") for entry in SERVICES["mosquitto"]["ports"]]
    assert published == [["8883", "8883"], ["8884", "8884"]]
    for _, port in published:
        assert "cafile /mosquitto/config/certs/ca.crt" in listeners[int(port)]
        assert "tls_version tlsv1.2" in listeners[int(port)]
    assert listeners[1883] == ["listener 1883 127.0.0.1"]  # in clear only inside the container
    assert "require_certificate true" in listeners[8884] and "use_identity_as_username true" in listeners[8884]


def test_the_bridges_use_a_tls_listener_of_the_broker() -> None:
    listeners = _listeners()
    port = int(BRIDGE_URL.rsplit(":", 1)[1])
    assert any(line.startswith("certfile ") for line in listeners[port])
    # the CA the bridges trust is the file the broker's certificate comes from
    assert {s["file"] for name, s in COMPOSE["secrets"].items() if name == Path(CA_SECRET).name} == {
        "./mosquitto/certs/ca.crt"
    }


def test_the_broker_healthcheck_speaks_tls() -> None:
    test = " ".join(SERVICES["mosquitto"]["healthcheck"]["test"])
    assert "-p 8883" in test and "--cafile /mosquitto/config/certs/ca.crt" in test and "-h localhost" in test


# -- the image ----------------------------------------------------------------------------------


def test_dockerfile() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    entrypoints = [json.loads(args) for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoints == [["locktwin"]]
    assert "locktwin = " in (REPO / "pyproject.toml").read_text()  # the console script pip installs
    assert any(op == "RUN" and "pip install ." in args for op, args in instructions)
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    for op, args in instructions:
        if op == "COPY":
            *sources, _dest = args.split()
            for source in sources:
                assert (REPO / source).exists(), source


def test_dockerignore_lets_the_copied_files_in() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for op, args in dockerfile():
        if op == "COPY":
            *sources, _dest = args.split()
            for source in sources:
                assert source.rstrip("/") in allowed, source


# -- the simulator override ---------------------------------------------------------------------


def _env_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def test_sim_override_points_every_bridge_at_its_simulator() -> None:
    assert set(SIM["services"]) == set(VENDORS)
    for vendor in VENDORS:
        service = SIM["services"][vendor]
        assert service["depends_on"] == {f"{vendor}-sim": {"condition": "service_healthy"}}
        assert service["environment"][f"LOCKTWIN_{vendor.upper()}_BASE_URL"].startswith(f"http://{vendor}-sim:8080")
        assert set(service) <= {"environment", "depends_on"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_sim_override_gives_the_simulator_kits_settings(vendor: str) -> None:
    args = parser().parse_args(SERVICES[f"{vendor}-sim"]["command"])
    cls = load_adapter_class(vendor)
    url = f"http://{vendor}-sim:{args.port}"
    kits = [cls.simulator(devices=args.devices) for _ in range(2)]
    assert kits[0] is not None and kits[1] is not None, f"{vendor} has no simulator: compose.sim.yaml cannot run it"
    first, second = kits[0].settings(url), kits[1].settings(url)
    env = SIM["services"][vendor]["environment"]
    prefix = f"LOCKTWIN_{vendor.upper()}_"
    for key, value in first.items():
        if value != second.get(key):
            continue  # drawn anew by every simulator process: checked below
        name = prefix + key.upper()
        assert name in env, f"{name} missing from compose.sim.yaml"
        if isinstance(value, list | dict):
            assert json.loads(env[name]) == value, name
        else:
            assert env[name] == _env_value(value), name
    random_keys = sorted(k for k in first if first[k] != second.get(k))
    # a value drawn anew by every simulator process could not be given to a bridge in another container
    assert not random_keys, f"{vendor}'s simulator draws {', '.join(random_keys)} anew: it needs fixed demo credentials"
