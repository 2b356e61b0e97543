"""Full card ids nowhere they must not be (issue 16): cards issued through a real Tuya bridge, its
simulator and a real mosquitto, then every message the bridge published, every table of every
store and every byte of every file of the data folder (write-ahead logs included) searched for
them; and every file 0600 in a 0700 folder.

A full id is needed until its command ends (to issue the card; after a restart, to plan again);
after that only its masked form (``****1234``) and the lock's own ``lock_card_id`` are kept.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.simulator import TuyaSimulator, serve_simulator
from twin.testing import BridgeHarness

from .conftest import tuya_settings
from .test_mqtt import window

pytestmark = pytest.mark.anyio


def card_ids(count: int) -> list[str]:
    """Ids of this run only, so that a find is ours: what the mask hides differs, and so do the last
    four characters (what it shows)."""
    return [f"LTCARD-{secrets.token_hex(6).upper()}-{n:04d}" for n in range(1, count + 1)]


def files(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.rglob("*")) if path.is_file())


def rows(database: Path) -> Iterator[tuple[str, str]]:
    """(table, row as text) of every row of every table, read as SQLite itself sees them."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                yield table, " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row)
    finally:
        conn.close()


def hidden(card_id: str) -> bytes:
    """What the mask hides: finding it anywhere is finding the id."""
    return card_id[:-4].encode()


def leaks(data_dir: Path, ids: list[str]) -> list[str]:
    """Where the full ids are in the data folder: file bytes (WAL, SHM included) and table rows."""
    found = []
    for path in files(data_dir):
        raw = path.read_bytes()
        found += [f"{path.relative_to(data_dir)}: {cid}" for cid in ids if hidden(cid) in raw]
        if raw.startswith(b"SQLite format 3"):
            for table, row in rows(path):
                found += [f"{path.relative_to(data_dir)} {table}: {cid}" for cid in ids if hidden(cid).decode() in row]
    return found


def modes(data_dir: Path) -> list[str]:
    """Files not 0600 and folders not 0700 under the data folder (the folder itself included)."""
    root = stat.S_IMODE(data_dir.stat().st_mode)
    wrong = [] if root == 0o700 else [f". {oct(root)}"]
    for path in sorted(data_dir.rglob("*")):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{path.relative_to(data_dir)} {oct(mode)}")
    return wrong


async def test_mqtt_card_ids_masked_everywhere_and_files_private(mqtt_broker: str, tmp_path: Path) -> None:
    data = tmp_path / "data"  # made by the bridge
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    first, second, third, fourth, requested, refused = ids = card_ids(6)
    async with serve_simulator(sim) as served:
        adapter = TuyaAdapter(settings=tuya_settings(sim, served, poll_interval=30.0))
        async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=data) as h:
            # 1. cards as desired state, with a /set superseded while another runs (never sent)
            lock.latency = 0.1  # each card call takes a while: the next /set waits behind it
            running = h.topic(device, "set")
            await h.publish(running, {"transaction": "cards-1", "cards": {first: window(30), second: window(10)}})
            await h.wait_for(lambda: any(e["data"]["to"] == "sent" for e in h.events(device, "command")))
            await h.publish(running, {"transaction": "cards-2", "cards": {third: window(5)}})
            await h.publish(running, {"transaction": "cards-3", "cards": {first: window(30), fourth: window(20)}})
            finals = [await h.final(device, t, timeout=20) for t in ("cards-1", "cards-2", "cards-3")]
            bad = {refused: {"begin": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}
            rejected = await h.set(device, {"cards": bad})  # its error names the card
            # 2. a card issued by a /request of its own (slow too: its twin is published while it runs)
            issued = await h.request(device, "issue_card", {"card_id": requested})
            lock.latency = 0.0
            state = await h.wait_retained(
                device, "state", lambda s: set(s.get("cards", {})) == {"****0001", "****0004"}
            )
            commands = (h.topic(device, "set"), h.topic(device, "request/"))  # the test's own messages
            published = [(t, p) for t, p, _, _ in h.messages if not t.startswith(commands)]
            twin = h.retained_json(device, "twin")
            # 3. the files, while the bridge runs: the old copies go with the next checkpoint
            with anyio.move_on_after(10):  # a leak left after that is reported below
                while leaks(data, ids):  # noqa: ASYNC110 - the checkpoint runs once a second
                    await anyio.sleep(0.2)
            running_leaks = leaks(data, ids)
            running_modes = modes(data)
            journal = [row for _, row in rows(data / "tuya" / "twins.sqlite") if "****" in row]
    assert [f["status"] for f in finals] == ["succeeded", "superseded", "succeeded"], finals
    assert issued["status"] == "succeeded", issued
    assert {c.card_id for c in lock.cards.values()} == {first, fourth, requested}  # the cloud has them all
    assert set(state["cards"]) == {"****0001", "****0004"}
    # every message the bridge published: masked ids only (and they are there: the control)
    assert [t for t, p in published if any(hidden(cid) in p for cid in ids)] == []
    assert any(b"****0005" in p for _, p in published)  # the issue_card request, as the twin shows it
    assert rejected["status"] == "rejected"
    assert "****0006: end must be after begin" in rejected["error"]["message"]
    assert twin["command"]["value"] == {"card_id": "****0005"}
    running_twins = [json.loads(p)["command"] for t, p in published if t.endswith("/twin")]
    assert {"name": "issue_card", "status": "sent", "value": {"card_id": "****0005"}} in [
        {k: c[k] for k in ("name", "status", "value")} for c in running_twins if c
    ]
    # the store and every other file: no full id, while running and after the stop
    assert any("****0003" in row for row in journal)  # the superseded /set is journaled, masked
    assert running_leaks == []
    assert leaks(data, ids) == []
    assert running_modes == []
    assert modes(data) == []
    assert {p.name for p in files(data / "tuya")} >= {"twins.sqlite", "cards.json", ".lock"}


def test_card_ids_search_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The control of the search above: a full id in a table row, a WAL or a plain file is found."""
    [cid] = card_ids(1)
    db = tmp_path / "x.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (f'{{"{cid}": 1}}',))
    conn.commit()
    assert any("x.sqlite-wal" in leak for leak in leaks(tmp_path, [cid]))
    conn.close()  # the WAL goes into the file: the row is found there
    assert any("x.sqlite t" in leak for leak in leaks(tmp_path, [cid]))
    (tmp_path / "cards.json").write_text(f'{{"{cid}": {{}}}}')
    assert any(leak.startswith("cards.json") for leak in leaks(tmp_path, [cid]))
    assert any("cards.json" in wrong for wrong in modes(tmp_path))
