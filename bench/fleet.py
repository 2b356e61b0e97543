"""Fleet size: republishing every retained topic at start, memory and store size per device and per
command, and a new subscriber to the whole tree under the shipped broker configuration.

    python -m bench.fleet --devices 100000

Floor: the same retained messages (captured from the bridge) published by a bare aiomqtt client with
the same number of publishes in flight, to the same broker, in the same run.

Shipped configuration: mosquitto started with exactly ``mosquitto/mosquitto.conf`` (only the
listener, the paths and the log destination rewritten, as ``tests/test_broker_acl.py`` does), the
shipped ``acl`` (plus a block for the bench's vendor, ``fleet``, made like every vendor's) and a password
file made by ``mosquitto/make-passwords``; the bridge connects as ``bridge-fleet`` on base topic
``locktwin``, then a new ``dashboard`` client subscribes to ``locktwin/#`` and counts the retained
``state`` topics it receives.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import anyio

from bench.command import commander
from bench.common import Report, private_broker
from bench.fleet_adapter import FleetAdapter, FleetSettings
from twin.broker import free_port
from twin.config import MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.publisher import Publisher
from twin.runtime import PUBLISH_WINDOW, BridgeRuntime

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "mosquitto"
#: the bench adapter's vendor, given a bridge user like a registered vendor's
VENDOR = "fleet"
PASSWORDS = {
    f"bridge-{VENDOR}": "bench-bridge",
    "operator": "bench-operator",
    "homeassistant": "bench-ha",
    "dashboard": "bench-dash",
}


class FastConfirmFleet(FleetAdapter):
    """The fleet adapter with a tiny first confirmation delay (its devices report LOCKED at once)."""

    confirm_interval = 0.001


async def _collect(
    url_port: int,
    pattern: str,
    expected: int,
    sink: list[tuple[str, bytes]],
    done: anyio.Event,
    **auth: Any,
) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port, max_queued_incoming_messages=0, **auth) as client:
        await client.subscribe(pattern, qos=1)
        async for message in client.messages:
            sink.append((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]
            if len(sink) >= expected:
                done.set()


async def _until(done: anyio.Event, seen: list[Any], expected: int, idle: float = 30.0) -> None:
    """Wait for ``done``; fail when nothing new arrived for ``idle`` seconds (messages were lost)."""
    while not done.is_set():
        count = len(seen)
        with anyio.move_on_after(idle):
            await done.wait()
        if not done.is_set() and len(seen) == count:
            raise RuntimeError(f"only {count} of {expected} retained messages arrived")


def _runtime(adapter: FleetAdapter, port: int, data: Path, base: str, **mqtt: Any) -> BridgeRuntime:
    return BridgeRuntime(
        adapter=adapter,
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}", **mqtt),
        data_dir=data,
        base_topic=base,
        homeassistant=HomeAssistantSettings(enabled=False),
    )


async def bridge_start(
    port: int, data: Path, devices: int, then: Callable[[BridgeRuntime], Awaitable[None]] | None = None
) -> tuple[float, list[tuple[str, bytes]]]:
    """Start a bridge, time until every retained topic arrived; ``then`` runs while it is still up."""
    expected = devices * 2  # state and twin per device, after the pages of the device list
    seen: list[tuple[str, bytes]] = []
    pages: list[tuple[str, bytes]] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_collect, port, "fleet/fleet/#", expected, seen, done)
        tg.start_soon(_collect, port, "fleet/bridge/fleet/devices/#", 1, pages, anyio.Event())
        await anyio.sleep(0.5)
        runtime = _runtime(FastConfirmFleet(settings=FleetSettings(devices=devices)), port, data, "fleet")
        started = time.perf_counter()
        tg.start_soon(runtime.run)
        await _until(done, seen, expected)
        elapsed = time.perf_counter() - started
        seen = pages + seen  # what the bare publish repeats, in the bridge's order
        if then is not None:
            await then(runtime)
        tg.cancel_scope.cancel()
    return elapsed, seen


async def bare_publish(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish the same retained messages under another prefix, PUBLISH_WINDOW in flight."""
    expected = len(messages)
    seen: list[tuple[str, bytes]] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_collect, port, "floor/#", expected, seen, done)
        await anyio.sleep(0.5)
        publisher = Publisher(window=PUBLISH_WINDOW)  # the bridge's own publisher and window
        async with publisher.prepare(aiomqtt.Client("127.0.0.1", port)) as client:
            publisher.attach(client)
            started = time.perf_counter()
            for topic, payload in messages:
                publisher.send("floor/" + topic, payload, retain=True)
            await publisher.drained()
            await _until(done, seen, expected)
            elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed


def store_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-wal"))


async def store_per_command(runtime: BridgeRuntime, port: int, commands: int, report: Report) -> None:
    """Run ``commands`` /set LOCKED (one per device, 200 in flight) and measure the store's growth."""
    path = runtime.store.path
    before = store_size(path)
    devices = list(runtime.engine.devices)[:commands]
    async with commander(port, prefix="fleet/fleet") as cmd:
        limiter = anyio.CapacityLimiter(200)

        async def one(device: str) -> None:
            async with limiter:
                await cmd.command(device, True)

        async with anyio.create_task_group() as tg:
            for device in devices:
                tg.start_soon(one, device)
    after = store_size(path)
    label = f"store bytes per command ({len(devices)} /set, journal included)"
    report.value(label, (after - before) / len(devices), " B")


# -- the shipped broker configuration ----------------------------------------------------------------


def _for_bench(conf: str, *, port: int, workdir: Path) -> str:
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {workdir}/passwd",
        "acl_file": f"acl_file {workdir}/acl",
        "persistence_location": f"persistence_location {workdir}/data/",
        "log_dest": f"log_dest file {workdir}/mosquitto.log",
    }
    # the bench measures the plain listener only: the TLS listeners (and their certificate lines) go
    tls_keys = {"cafile", "certfile", "keyfile", "tls_version", "require_certificate", "use_identity_as_username"}
    lines = []
    listeners = 0
    for line in conf.splitlines(keepends=True):
        stripped = line.strip()
        key = stripped.split()[0] if stripped and not stripped.startswith("#") else None
        if key == "listener":
            listeners += 1
            if listeners > 1:
                continue
        if key in tls_keys:
            continue
        lines.append(replacements[key] + "\n" if key in replacements else line)
    return "".join(lines)


def _with_vendor(acl: str, vendor: str) -> str:
    """The shipped acl plus a block for ``vendor``, made from the first vendor's (all blocks are alike)."""
    found = re.search(r"^user bridge-(\S+)\n(?:topic .*\n)+", acl, flags=re.MULTILINE)
    if found is None:
        raise RuntimeError("mosquitto/acl has no bridge-<vendor> block to copy")
    block = found[0].replace(found[1], vendor)
    return acl + "\n" + block


@contextmanager
def shipped_broker() -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    workdir = Path(tempfile.mkdtemp(prefix="locktwin-shipped-"))
    (workdir / "data").mkdir()
    env = {**os.environ, "MOSQUITTO_PASSWD": passwd}
    env.update({f"LOCKTWIN_{role.upper().replace('-', '_')}_PASSWORD": pw for role, pw in PASSWORDS.items()})
    make = [str(SHIPPED / "make-passwords"), "--dir", str(workdir), "--vendor", VENDOR]
    subprocess.run(make, env=env, check=True, capture_output=True)
    (workdir / "acl").write_text(_with_vendor((SHIPPED / "acl").read_text(), VENDOR))
    port = free_port()
    (workdir / "mosquitto.conf").write_text(
        _for_bench((SHIPPED / "mosquitto.conf").read_text(), port=port, workdir=workdir)
    )
    if os.geteuid() == 0:  # a root-started mosquitto drops to its own user before reading its files
        try:
            user = pwd.getpwnam("mosquitto")
        except KeyError:
            user = pwd.getpwnam("nobody")
        for path in (workdir, workdir / "data", workdir / "passwd", workdir / "acl", workdir / "mosquitto.conf"):
            os.chown(path, user.pw_uid, user.pw_gid)
    proc = subprocess.Popen([binary, "-c", str(workdir / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("shipped mosquitto did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def new_subscriber_count(port: int, devices: int, data: Path) -> tuple[int, float]:
    """Bridge as ``bridge-fleet``; once its states are out, a new ``dashboard`` subscriber to ``locktwin/#``."""
    dash = {"username": "dashboard", "password": PASSWORDS["dashboard"]}
    live: list[tuple[str, bytes]] = []
    published = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(_collect, port, "locktwin/fleet/+/state", devices, live, published, **dash))
        await anyio.sleep(0.5)
        runtime = _runtime(
            FleetAdapter(settings=FleetSettings(devices=devices)),
            port,
            data,
            "locktwin",
            username=f"bridge-{VENDOR}",
            password=PASSWORDS[f"bridge-{VENDOR}"],
        )
        tg.start_soon(runtime.run)
        with anyio.fail_after(600):
            await published.wait()
        states = 0
        started = time.perf_counter()
        async with aiomqtt.Client("127.0.0.1", port, max_queued_incoming_messages=0, **dash) as client:
            await client.subscribe("locktwin/#", qos=1)
            with anyio.move_on_after(600):
                while states < devices:
                    with anyio.move_on_after(10) as idle:  # nothing for 10 s: that is all there is
                        message = await anext(client.messages)
                    if idle.cancelled_caught:
                        break
                    if (
                        message.retain
                        and message.topic.value.endswith("/state")
                        and "/bridge/" not in message.topic.value
                    ):
                        states += 1
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return states, elapsed


async def bridge_memory(port: int, data: Path, devices: int) -> int:
    """Resident bytes a bridge process holds for ``devices`` (see bench/fleet_memory.py)."""
    command = [sys.executable, "-m", "bench.fleet_memory", "--port", str(port), "--devices", str(devices)]
    done = await anyio.run_process([*command, "--data", str(data)], cwd=REPO)
    figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return int(figures["rss_after"] - figures["rss_before"])


async def main(devices: int, commands: int = 1000) -> Report:
    work = Path(tempfile.mkdtemp(prefix="locktwin-fleet-"))
    report = Report(name="fleet")
    try:
        with private_broker(work / "broker") as broker:
            size0: list[int] = []

            async def then(runtime: BridgeRuntime) -> None:
                size0.append(store_size(runtime.store.path))
                await store_per_command(runtime, broker.port, min(commands, devices), report)

            elapsed, seen = await bridge_start(broker.port, work / "data", devices, then)
            floor = await bare_publish(broker.port, seen)
            report.ratio(f"republish {len(seen)} retained topics of {devices} devices", elapsed, floor, "<= 2", "s")
            rss = await bridge_memory(broker.port, work / "data-memory", devices)
            report.value("resident memory per device (a bridge process of its own)", rss / devices, " B")
            report.value("store bytes per device", size0[0] / devices, " B")
        with shipped_broker() as port:
            states, took = await new_subscriber_count(port, devices, work / "data-shipped")
            report.value(f"shipped mosquitto.conf: retained states a new subscriber got (of {devices})", states)
            report.value("shipped mosquitto.conf: time for the new subscriber to get them", took, "s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.write()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--commands", type=int, default=1000)
    args = parser.parse_args()
    anyio.run(main, args.devices, args.commands)
