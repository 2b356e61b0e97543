"""Fixtures shared by the core tests and every vendor's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stores import KINDS, StoreCase, store_case
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
