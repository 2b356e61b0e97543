"""Failover (issue 22): the PostgreSQL store's command throughput over the SQLite store's, and the time
a partition takes to move when its instance dies or pauses, over the lease time plus 2 s.

    python -m bench.failover [--quick]

- **throughput**: one in-process bridge on SQLite and one in-process instance on a fresh PostgreSQL
  database (``LOCKTWIN_TEST_PG``'s server, default 127.0.0.1:5432), same broker, same zero-latency
  OKAI simulator, same client, under different base topics; alternating rounds of one command per
  device on every device at once (as ``bench.throughput``). Goal >= 0.7. Beside it, how many engine
  transactions shared one PostgreSQL commit (the group commit, :mod:`twin.pgwriter`).
- **takeover**: two ``locktwin run okai`` processes (lease 10 s) on another fresh database; one is
  killed (SIGKILL), started again and, once the partitions are balanced again, paused (SIGSTOP)
  for longer than the lease. Measured from each signal: the lease log's first acquisition of a
  partition the victim held, and the final answer of a command sent at the signal to one of its
  devices. Goal <= 1 over ``lease_seconds + 2``.

Results in ``bench/results/failover.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import psycopg

from bench.command import BenchOkaiAdapter, Commander, Stack, commander, concurrent, okai_stack
from bench.common import Report, private_broker
from tests.faults import pg
from twin.cluster import ClusterRuntime
from twin.config import ClusterSettings, MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.runtime import BridgeRuntime
from twin.shard import Shard

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
#: the schema of the OKAI bridge on the default base topic (twin.pgschema.schema_for)
SCHEMA = "locktwin_okai"


async def throughput(report: Report, rounds: int, devices: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="locktwin-fo-") as tmp,
        private_broker(Path(tmp)) as broker,
        pg.fresh_database() as url,
    ):
        async with okai_stack(broker.port, devices) as stack, anyio.create_task_group() as tg:
            mqtt = MqttSettings(url=f"mqtt://127.0.0.1:{broker.port}")
            sqlite = BridgeRuntime(
                adapter=BenchOkaiAdapter(settings=stack.settings()),
                mqtt=mqtt.model_copy(update={"client_id": f"bench-{uuid.uuid4().hex[:6]}"}),
                data_dir=stack.work / "sqlite",
                homeassistant=HomeAssistantSettings(enabled=False),
            )
            cluster = ClusterRuntime(
                adapter=BenchOkaiAdapter(settings=stack.settings()),
                mqtt=mqtt,
                store_url=url,
                store_password=None,
                data_dir=stack.work / "pg",
                base_topic="benchpg",
                cluster=ClusterSettings(instance="bench", partitions=PARTITIONS),
                homeassistant=HomeAssistantSettings(enabled=False),  # as the SQLite floor's
            )
            tg.start_soon(sqlite.run)
            tg.start_soon(cluster.run)
            with anyio.fail_after(60):
                await sqlite.connected.wait()
                while len(cluster.partitions) < PARTITIONS or cluster.intake is None:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
                await cluster.connected.wait()
                await anyio.sleep(1.0)  # the intake's session and its subscriptions
            async with commander(broker.port) as lite, commander(broker.port, prefix="benchpg/okai") as shared:
                await concurrent(lite.command, stack.devices, 1)  # warm-up
                await concurrent(shared.command, stack.devices, 1)
                took = {"sqlite": 0.0, "pg": 0.0}
                assert cluster.db is not None
                writer = cluster.db.writer
                before = (writer.groups, writer.committed)
                for i in range(rounds):
                    series = [("sqlite", lite.command), ("pg", shared.command)]
                    for name, send in series if i % 2 == 0 else reversed(series):
                        took[name] += devices / await concurrent(send, stack.devices, 1)
                groups, committed = writer.groups - before[0], writer.committed - before[1]
            tg.cancel_scope.cancel()
    commands = devices * rounds
    label = f"throughput, {devices} in flight: PostgreSQL store over SQLite"
    _figure(report, label, commands / took["pg"], commands / took["sqlite"], ">= 0.7", " cmd/s")
    # the group commit (twin.pgwriter): engine transactions that shared one PostgreSQL commit
    report.value("engine transactions per PostgreSQL commit", committed / max(groups, 1))
    report.value("PostgreSQL commits per command", groups / commands)


def _instance(name: str, *, url: str, port: int, stack: Stack, lease: float, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOCKTWIN_MQTT__URL": f"mqtt://127.0.0.1:{port}",
        "LOCKTWIN_STORE": url,
        "LOCKTWIN_CLUSTER__INSTANCE": name,
        "LOCKTWIN_CLUSTER__PARTITIONS": str(PARTITIONS),
        "LOCKTWIN_CLUSTER__LEASE_SECONDS": str(lease),
        "LOCKTWIN_DATA_DIR": str(tmp / name),
        "LOCKTWIN_OKAI_USER_KEY": stack.settings().user_key.get_secret_value(),
        "LOCKTWIN_OKAI_SIGN_KEY": stack.settings().sign_key.get_secret_value()
        if stack.settings().sign_key is not None
        else "",
        "LOCKTWIN_OKAI_BASE_URL": stack.base_url,
        "LOCKTWIN_OKAI_DEVICES": json.dumps(stack.devices),
    }
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "twin.cli", "run", "okai"], env=env, stdout=log, stderr=log)


def _held(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> dict[str, list[int]]:
    try:
        # the intake's row (partition -1) is no partition: its holder has one lease more
        rows = conn.execute(
            f'SELECT owner, partition FROM "{schema}".leases WHERE owner IS NOT NULL AND partition >= 0'
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        return {}  # the first instance has not made the schema yet
    out: dict[str, list[int]] = {}
    for owner, partition in rows:
        out.setdefault(str(owner).split("#")[0], []).append(int(partition))  # type: ignore[call-overload]
    return out


async def _takeover(conn: psycopg.Connection[tuple[object, ...]], schema: str, victim: str, since: float) -> float:
    while True:
        row = conn.execute(
            f'SELECT min(EXTRACT(EPOCH FROM at)) FROM "{schema}".lease_log WHERE previous LIKE %s '
            "AND EXTRACT(EPOCH FROM at) > %s",
            (f"{victim}#%", since),
        ).fetchone()
        if row is not None and row[0] is not None:
            return float(row[0]) - since  # type: ignore[arg-type]
        await anyio.sleep(0.05)


def _figure(report: Report, label: str, measured: float, floor: float, goal: str, unit: str) -> None:
    """One figure, saved and printed at once (a later part that fails keeps it)."""
    ratio = report.ratio(label, measured, floor, goal, unit)
    report.save()
    print(f"failover: {label}: {measured:.4g}{unit} over {floor:.4g}{unit} = {ratio:.2f} ({goal})", flush=True)


async def _balanced(conn: psycopg.Connection[tuple[object, ...]], schema: str, names: str) -> None:
    """Until each of ``names`` holds its half of the partitions."""
    want = {n: PARTITIONS // len(names) for n in names}
    while {n: len(v) for n, v in _held(conn, schema).items() if v} != want:  # noqa: ASYNC110 - a table, no event
        await anyio.sleep(0.2)


async def _served(send: Commander, device: str, since: float) -> float:
    """Seconds from ``since`` to the final answer (succeeded) of a command sent to ``device`` now."""
    await send.command(device, True)
    return time.time() - since


async def _outage(
    report: Report,
    conn: psycopg.Connection[tuple[object, ...]],
    *,
    victim: subprocess.Popen[bytes],
    how: signal.Signals,
    send: Commander,
    devices: list[str],
    lease: float,
    what: str,
) -> None:
    """Signal ``victim`` (the instance ``a``), then measure when a partition of its moves and when a
    command to one of its devices, sent at the signal, is answered."""
    mine = set(_held(conn, SCHEMA)["a"])
    device = next(d for d in devices if Shard.slot(d, PARTITIONS) in mine)
    since = time.time()
    victim.send_signal(how)
    with anyio.fail_after(lease + 20):
        async with anyio.create_task_group() as tg:
            served: list[float] = []

            async def command() -> None:
                served.append(await _served(send, device, since))

            tg.start_soon(command)
            moved = await _takeover(conn, SCHEMA, "a", since)
    _figure(report, f"partition taken over after {what}", moved, lease + 2, "<= 1", " s")
    _figure(report, f"a command to its device answered after {what}", served[0], lease + 2, "<= 1", " s")


async def takeover(report: Report, lease: float) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="locktwin-fo-") as tmp,
        private_broker(Path(tmp)) as broker,
        pg.fresh_database() as url,
    ):
        async with okai_stack(broker.port, 20) as stack:
            start = lambda n: _instance(n, url=url, port=broker.port, stack=stack, lease=lease, tmp=Path(tmp))  # noqa: E731
            procs = {n: start(n) for n in "ab"}
            report.value("lease time", lease, " s")
            try:
                with psycopg.connect(url, autocommit=True) as conn, anyio.fail_after(120):
                    async with commander(broker.port) as send:
                        await _balanced(conn, SCHEMA, "ab")
                        await concurrent(send.command, stack.devices, 1)  # every device served
                        for how, what in ((signal.SIGKILL, "SIGKILL"), (signal.SIGSTOP, "SIGSTOP")):
                            await _outage(
                                report,
                                conn,
                                victim=procs["a"],
                                how=how,
                                send=send,
                                devices=stack.devices,
                                lease=lease,
                                what=what,
                            )
                            if how == signal.SIGKILL:  # back, and balanced again, for the pause
                                procs["a"].wait()
                                procs["a"] = start("a")
                                await _balanced(conn, SCHEMA, "ab")
            except TimeoutError:
                held = _held(psycopg.connect(url, autocommit=True), SCHEMA)
                logs = "\n".join(f"--- {n}.log\n" + (Path(tmp) / f"{n}.log").read_text()[-3000:] for n in procs)
                raise AssertionError(f"the instances did not get there; partitions held: {held}\n{logs}") from None
            finally:
                for proc in procs.values():
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                    proc.wait(timeout=15)


async def main(quick: bool) -> Report:
    """The figures (the throughput's rounds alternate, as bench.throughput's)."""
    report = Report(name="failover")
    why = pg.available()
    if why is not None:
        report.value(f"skipped: {why}", 0)
        return report
    await throughput(report, 4 if quick else 10, 100 if quick else 200)
    await takeover(report, 10.0)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.quick).write()
