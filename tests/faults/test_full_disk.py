"""A store that cannot write, with a real ``locktwin run okai`` on a small tmpfs (issue 16).

- The disk fills up under 300 /set: every command gets an answer (accepted, or rejected
  STORE_UNAVAILABLE, retryable), nothing accepted is lost, the bridge says it is degraded
  (``bridge/okai/health``, ``locktwin_store_writable``) and stays online; once space is freed the
  accepted commands resume by themselves and each gets its final answer.
- A damaged, truncated or read-only store stops the bridge at start with exit 2 and one line naming
  the file and what is wrong.

The tmpfs needs root (``mount``); where the machine does not allow one, these tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import ROOT, Client, metric_sum, okai_bridge, scrape, start_bridge
from twin.broker import free_port
from twin.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of its own."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, *, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the disk."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as out:
        out.truncate(0)
        chunk = b"\0" * (1 << 16)
        left = max(0, free - leave)
        while left > 0:
            out.write(chunk[: min(len(chunk), left)])
            left -= len(chunk)
    return filler


def health(client: Client) -> dict[str, object] | None:
    raw = client.retained.get(f"{client.base}/bridge/okai/health")
    return None if raw is None else json.loads(raw)


async def test_a_full_disk_answers_every_command_and_resumes(mqtt_broker: str, tmp_path: Path, disk: Path) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=20, bolt_seconds=0.05, delivery_seconds=0.0)
    imeis = sim.fleet.imeis
    base = f"lt-disk-{uuid.uuid4().hex[:8]}"
    metrics = free_port()
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker,
            base=base,
            base_url=base_url,
            imeis=imeis,
            workdir=tmp_path,
            LOCKTWIN_DATA_DIR=str(disk),
            LOCKTWIN_METRICS_PORT=str(metrics),
            LOCKTWIN_OKAI_POLL_INTERVAL="0.5",  # reads observe while the store cannot write, too
        )
        try:
            await start_bridge(bridge, client)
            await client.wait_for(lambda: (health(client) or {}).get("status") == "ok", timeout=20)
            filler = fill(disk, leave=512 * 1024)
            txns = []
            for n in range(300):
                txns.append(
                    await client.send_set(
                        imeis[n % 20], "UNLOCKED" if n % 2 else "LOCKED", expires_in=90, issued_at=True
                    )
                )
            await client.wait_for(lambda: all(client.answers[t].answered for t in txns), timeout=60)
            refused = [t for t in txns if client.answers[t].statuses[0] == "rejected"]
            accepted = [t for t in txns if client.answers[t].statuses[0] == "accepted"]
            assert len(refused) + len(accepted) == 300
            assert refused, "the disk never filled up"
            for txn in refused:
                error = client.answers[txn].bodies[0]["error"]
                assert error["code"] == "STORE_UNAVAILABLE" and error["retryable"] is True, error
            await client.wait_for(lambda: (health(client) or {}).get("status") == "degraded", timeout=20)
            assert metric_sum(await scrape(metrics), "locktwin_store_writable", vendor="okai") == 0
            assert bridge.alive() and client.bridge_states[-1] == b"online"

            filler.unlink()  # space again: accepted commands go on by themselves
            await client.wait_for(lambda: (health(client) or {}).get("status") == "ok", timeout=30)
            await client.wait_for(lambda: all(client.answers[t].finals for t in accepted), timeout=60)
            assert metric_sum(await scrape(metrics), "locktwin_store_writable", vendor="okai") == 1
            # and it takes new commands again
            again = await client.send_set(imeis[0], "LOCKED", expires_in=30, issued_at=True)
            await client.wait_for(lambda: client.answers[again].finals, timeout=30)
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()
    for txn in accepted:
        assert len(client.answers[txn].finals) == 1, client.answers[txn].statuses
    print(f"[full disk] {len(accepted)} accepted, {len(refused)} refused STORE_UNAVAILABLE")


def run_okai(data: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")},
        "PYTHONPATH": str(ROOT),
        "LOCKTWIN_DATA_DIR": str(data),
        "LOCKTWIN_OKAI_USER_KEY": DEMO_USER_KEY,
        "LOCKTWIN_OKAI_DEVICES": '["863795050000001"]',
        "LOCKTWIN_MQTT__URL": "mqtt://127.0.0.1:9",  # never reached: the store stops it first
    }
    return subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "okai"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_damaged_store_stops_the_bridge_with_one_line(tmp_path: Path) -> None:
    store = tmp_path / "okai" / "twins.sqlite"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"these are not the bytes of a database\n" * 200)
    line = one_line(run_okai(tmp_path))
    assert str(store) in line and "not a database" in line, line


def test_a_truncated_store_stops_the_bridge_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "okai" / "twins.sqlite"
    made = Store(path=path)
    made.open()
    with made.transaction():
        for n in range(2000):
            made.journal(entry="state", device="d", source="poll", data={"n": n, "pad": "x" * 200})
    made.close()
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 3)
    for leftover in path.parent.glob("twins.sqlite-*"):
        leftover.unlink()
    line = one_line(run_okai(tmp_path))
    assert str(path) in line and ("malformed" in line or "damaged" in line), line


def test_a_read_only_store_stops_the_bridge_with_one_line(tmp_path: Path, disk: Path) -> None:
    made = Store(path=disk / "okai" / "twins.sqlite")
    made.open()
    made.close()
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=False).returncode == 0
    line = one_line(run_okai(disk))
    assert str(disk / "okai") in line and ("read-only" in line.lower() or "readonly" in line.lower()), line
