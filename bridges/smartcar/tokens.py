"""The token store: one SQLite file of linked Smartcar accounts and their vehicles.

Every write commits with ``synchronous=FULL`` before it returns, so a token the store handed out
survives a crash of the process right after it. Tokens never appear in a ``repr``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twin.files import private_file

from .models import TokenResponse

__all__ = ["Account", "StoredVehicle", "TokenStore"]

FILE_NAME = "tokens.sqlite"
#: refresh tokens live 60 days
REFRESH_LIFETIME = 60 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    user_id TEXT PRIMARY KEY,
    access_token TEXT NOT NULL,
    access_expires_at REAL NOT NULL,
    refresh_token TEXT NOT NULL,
    refresh_expires_at REAL NOT NULL,
    refused INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vehicles (
    vehicle_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    make TEXT,
    model TEXT,
    year INTEGER
);
"""


@dataclass(frozen=True, kw_only=True)
class Account:
    user_id: str
    access_token: str = field(repr=False)
    access_expires_at: float
    refresh_token: str = field(repr=False)
    refresh_expires_at: float
    refused: bool
    updated_at: float


@dataclass(frozen=True, kw_only=True)
class StoredVehicle:
    vehicle_id: str
    user_id: str
    make: str | None = None
    model: str | None = None
    year: int | None = None


class TokenStore:
    """Synchronous and tiny: each call is one short transaction on a local file."""

    def __init__(self, *, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        # 0600 before SQLite opens it (its -wal and -shm take the file's mode), never chmod-ed after
        self._db = sqlite3.connect(private_file(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("TokenStore.open() was not called")
        return self._db

    def save_tokens(self, user_id: str, tokens: TokenResponse, *, now: float | None = None) -> Account:
        """Store a token answer (durably) and return it as the account; clears a refusal."""
        now = time.time() if now is None else now
        account = Account(
            user_id=user_id,
            access_token=tokens.access_token,
            access_expires_at=now + tokens.expires_in,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=now + REFRESH_LIFETIME,
            refused=False,
            updated_at=now,
        )
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT(user_id) DO UPDATE SET "
                "access_token=excluded.access_token, access_expires_at=excluded.access_expires_at, "
                "refresh_token=excluded.refresh_token, refresh_expires_at=excluded.refresh_expires_at, "
                "refused=0, updated_at=excluded.updated_at",
                (
                    user_id,
                    account.access_token,
                    account.access_expires_at,
                    account.refresh_token,
                    account.refresh_expires_at,
                    now,
                ),
            )
        return account

    def mark_refused(self, user_id: str) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE accounts SET refused = 1, updated_at = ? WHERE user_id = ?", (time.time(), user_id))

    def account(self, user_id: str) -> Account | None:
        row = self.db.execute("SELECT * FROM accounts WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else _account(row)

    def accounts(self) -> list[Account]:
        return [_account(row) for row in self.db.execute("SELECT * FROM accounts ORDER BY user_id")]

    def save_vehicles(self, user_id: str, vehicles: Sequence[StoredVehicle]) -> None:
        """Replace the vehicle list of one account."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM vehicles WHERE user_id = ?", (user_id,))
            self.db.executemany(
                "INSERT OR REPLACE INTO vehicles VALUES (?, ?, ?, ?, ?)",
                [(v.vehicle_id, user_id, v.make, v.model, v.year) for v in vehicles],
            )

    def vehicles(self, user_id: str | None = None) -> list[StoredVehicle]:
        if user_id is None:
            rows = self.db.execute("SELECT * FROM vehicles ORDER BY vehicle_id")
        else:
            rows = self.db.execute("SELECT * FROM vehicles WHERE user_id = ? ORDER BY vehicle_id", (user_id,))
        return [StoredVehicle(vehicle_id=r[0], user_id=r[1], make=r[2], model=r[3], year=r[4]) for r in rows]

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def delete_account(self, user_id: str) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM accounts WHERE user_id = ?", (user_id,))


def _account(row: tuple[object, ...]) -> Account:
    user_id, access, access_exp, refresh, refresh_exp, refused, updated = row
    return Account(
        user_id=str(user_id),
        access_token=str(access),
        access_expires_at=float(access_exp),  # type: ignore[arg-type]
        refresh_token=str(refresh),
        refresh_expires_at=float(refresh_exp),  # type: ignore[arg-type]
        refused=bool(refused),
        updated_at=float(updated),  # type: ignore[arg-type]
    )
