"""Fixtures shared by the core tests and every vendor's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults import pg
from tests.stores import KINDS, SCHEMA, StoreCase, store_case
from twin.store import Store
from twin.testing import broker_from_environment


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[str]:
    """URL of the broker for tests: MQTT_URL, else a private mosquitto, else testcontainers."""
    url, cleanup = broker_from_environment()
    try:
        yield url
    finally:
        cleanup()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An open twin store in a fresh SQLite file."""
    s = Store(path=tmp_path / "twins.sqlite")
    s.open()
    yield s
    s.close()


@pytest.fixture(params=KINDS)
def twin_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    """Each store in turn: SQLite in a fresh file, PostgreSQL (one partition) in a fresh database
    (skipped without a server, except under CI)."""
    with store_case(request.param, tmp_path) as case:
        yield case


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the test (skipped without a server, failed under CI)."""
    pg.require()
    with pg.fresh_database() as made:
        yield made


@pytest.fixture
def pg_admin(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another connection to it, on the store tests' schema: what a process finds after a crash."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{SCHEMA}"')
        yield conn
