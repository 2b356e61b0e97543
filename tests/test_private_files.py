"""Every file locktwin makes under its data folder is 0600 in a 0700 folder, from its creation on,
and one an older version made wider is narrowed when opened (issue 16)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from bridges.smartcar.tokens import TokenStore
from twin.broker import MosquittoBroker
from twin.datalock import DataDirLock
from twin.files import private_file, private_folder, write_private
from twin.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): mode(p) for p in sorted(root.rglob("*"))}


def test_private_folder_makes_missing_parents_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the operator's folder (/var/lib): not ours to narrow
    private_folder(tmp_path / "data" / "tuya")
    assert (mode(tmp_path), mode(tmp_path / "data"), mode(tmp_path / "data" / "tuya")) == (0o755, 0o700, 0o700)
    (tmp_path / "data" / "tuya").chmod(0o755)
    private_folder(tmp_path / "data" / "tuya")
    assert mode(tmp_path / "data" / "tuya") == 0o700


def test_write_private_replaces_atomically_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a process that would create world-writable files
    try:
        target = tmp_path / "data" / "cards.json"
        write_private(target, b"one")
        target.chmod(0o644)
        write_private(target, b"two")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"two"
    assert tree(tmp_path / "data") == {"cards.json": 0o600}


def test_store_files_private_and_narrowed(tmp_path: Path) -> None:
    store = Store(path=tmp_path / "data" / "okai" / "twins.sqlite")
    store.open()
    store.set_meta("x", "1")  # a write: the WAL and its index exist now
    assert tree(tmp_path / "data") == {
        "okai": 0o700,
        "okai/twins.sqlite": 0o600,
        "okai/twins.sqlite-shm": 0o600,
        "okai/twins.sqlite-wal": 0o600,
    }
    store.close()
    # a store an older version left world-readable, WAL and all
    older = tmp_path / "old" / "twins.sqlite"
    older.parent.mkdir(mode=0o755)
    conn = sqlite3.connect(older)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(v)")
    conn.commit()
    for path in older.parent.iterdir():
        path.chmod(0o644)
    again = Store(path=older)
    again.open()
    try:
        assert set(tree(older.parent).values()) == {0o600}
        assert mode(older.parent) == 0o700
        assert again.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        again.close()
        conn.close()


def test_smartcar_tokens_and_data_lock_private(tmp_path: Path) -> None:
    tokens = TokenStore(directory=tmp_path / "data" / "smartcar")
    tokens.open()
    try:
        with DataDirLock(tmp_path / "data" / "smartcar", what="test"):
            assert tree(tmp_path / "data") == {
                "smartcar": 0o700,
                "smartcar/.lock": 0o600,
                "smartcar/tokens.sqlite": 0o600,
                "smartcar/tokens.sqlite-shm": 0o600,
                "smartcar/tokens.sqlite-wal": 0o600,
            }
    finally:
        tokens.close()


def test_private_file_narrows_sqlite_companions(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").write_bytes(b"")
        Path(f"{db}{suffix}").chmod(0o664)
    private_file(db)
    assert set(tree(tmp_path).values()) == {0o600}


@pytest.mark.skipif(not MosquittoBroker.available(), reason="needs mosquitto")
def test_demo_broker_folder_private(tmp_path: Path) -> None:
    broker = MosquittoBroker(workdir=tmp_path / "data" / "broker")
    broker.start()
    broker.stop()
    found = tree(tmp_path / "data")
    assert found.pop("broker") == 0o700
    assert found.pop("broker/mosquitto.conf") == 0o600
    assert set(found.values()) <= {0o600}  # its persistence file, when it may write one (not as root)
