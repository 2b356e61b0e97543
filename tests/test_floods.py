"""Floods and bursts from any role allowed to send commands (issue 16), over a real mosquitto:

- 2,000 /get of one device share its reads (single flight, at most one a ``get_interval``), all get
  their answer, and a /set of another device goes through meanwhile;
- a device's backlog of open commands is bounded (``max_queued``): more are refused DEVICE_BUSY;
- a burst of /set on one device supersedes in place and keeps the store (file, WAL) small.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest

import twin.store as store_module
from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.config import BridgeOptions
from twin.store import Store
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


async def test_a_flood_of_get_shares_the_reads_and_others_go_on(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        before = adapter.locks["d1"].reads
        flood = [f"g-{n}" for n in range(2000)]
        for txn in flood:
            await h.publish(h.topic("d1", "get"), {"transaction": txn})
        other = await h.set("d2", {"lock": "UNLOCKED"})  # another device's command, during the flood
        assert other["status"] == "succeeded"

        def answered() -> bool:
            got = {r["transaction"] for r in h.responses("d1", "get")}
            return got >= set(flood)

        await h.wait_for(answered, timeout=60)
        answers = [r for r in h.responses("d1", "get") if r["transaction"] in set(flood)]
        failed = [a["error"] for a in answers if a["status"] != "succeeded"]
        assert len(answers) == 2000 and not failed, failed[:3]
        reads = adapter.locks["d1"].reads - before
        # one read, then the rest share at most one a second while the flood lasts (was 2,001 reads)
        assert 1 <= reads <= 10, reads


async def test_a_devices_backlog_is_bounded(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].hang = True  # its first action never returns: the rest wait behind it
    options = BridgeOptions(max_queued=5, call_timeout=30)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        txns = [f"b-{n}" for n in range(8)]
        for txn in txns:
            await h.publish(h.topic("d1", "request/find"), {"transaction": txn, "expires_in": 60})

        def settled() -> list[dict[str, object]] | None:
            first = {r["transaction"]: r for r in h.responses("d1", "find")}
            return [first[t] for t in txns] if set(txns) <= first.keys() else None

        first = await h.wait_for(settled)
        assert [a["status"] for a in first] == ["accepted"] * 5 + ["rejected"] * 3
        busy = first[-1]["error"]
        assert isinstance(busy, dict) and busy["code"] == "DEVICE_BUSY" and busy["retryable"] is True
        # another device is not held back by d1's backlog
        assert (await h.set("d2", {"lock": "UNLOCKED"}))["status"] == "succeeded"


async def test_a_burst_on_one_device_keeps_the_store_small(mqtt_broker: str, tmp_path: Path) -> None:
    """1,000 /set in a burst on one device: each supersedes the one waiting, the WAL is copied into the
    file and truncated as the bridge goes, so the store's bytes per command stay ~ those of a row."""
    adapter = FakeAdapter(settings=FakeSettings(devices=["d1"]))
    adapter.locks["d1"].bolt_seconds = 0.0
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        txns = [f"burst-{uuid.uuid4().hex[:8]}" for _ in range(1000)]
        for n, txn in enumerate(txns):
            body = {"lock": "LOCKED" if n % 2 else "UNLOCKED", "transaction": txn, "expires_in": 60}
            await h.publish(h.topic("d1", "set"), body)
        await h.final("d1", txns[-1], timeout=60)
        finals = {r["transaction"]: r["status"] for r in h.responses("d1") if r["status"] != "accepted"}
        assert set(txns) <= finals.keys()
        assert finals[txns[-1]] == "succeeded"
        # how many wait long enough to be superseded depends on how soon the lock is confirmed (learned
        # per device, twin.confirmtiming: with a bolt of 0 s most are done before the next arrives)
        assert list(finals.values()).count("superseded") > 0
        assert set(finals.values()) <= {"superseded", "succeeded"}
        await anyio.sleep(2.5)  # two rounds of the bridge's checkpoint (once a second)
        store = tmp_path / "fake"
        total = sum(p.stat().st_size for p in store.iterdir() if p.name.startswith("twins.sqlite"))
        wal = store / "twins.sqlite-wal"
        per_command = total / len(txns)
        print(json.dumps({"store_bytes": total, "wal_bytes": wal.stat().st_size, "per_command": per_command}))
        assert per_command < 8 * 1024, per_command  # was ~55 KiB per command, in a WAL never truncated


def test_a_wal_past_its_limit_is_restarted_under_load_and_truncated_once_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a steady stream of commits the checkpoint restarts the log (the next commits write over
    it, so it grows no further and nobody appends to a new file); once the store is quiet it is
    truncated, so a burst leaves no large file behind."""
    monkeypatch.setattr(store_module, "WAL_LIMIT", 256 * 1024)
    store = Store(path=tmp_path / "twins.sqlite")
    store.open()
    store.checkpoint_elsewhere()
    wal = tmp_path / "twins.sqlite-wal"

    def burst(commits: int) -> None:
        for n in range(commits):
            with store.transaction():
                store.set_meta(f"k{n % 50}", "x" * 2000 + str(n))

    try:
        burst(400)  # ~1.6 MB of log: past the limit
        grown = wal.stat().st_size
        assert grown > store_module.WAL_LIMIT
        store.checkpoint()  # under load (400 commits since the last one): restarted, not truncated
        assert wal.stat().st_size == grown
        burst(400)
        assert wal.stat().st_size == grown  # written over from its start: the file did not grow
        store.checkpoint()
        store.checkpoint()  # no commit since: quiet, truncated
        assert wal.stat().st_size == 0
    finally:
        store.close()
