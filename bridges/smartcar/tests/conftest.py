"""Fixtures of the Smartcar tests: a simulator served over real HTTP, settings, a recording sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.cli import link_account
from bridges.smartcar.settings import SmartcarSettings
from bridges.smartcar.simulator import SmartcarSimulator, serve_simulator
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink

__all__ = [
    "make_settings",
]

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret-value"


def make_settings(url: str, **overrides: Any) -> SmartcarSettings:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "base_url": f"{url}/v2.0",
        "auth_url": f"{url}/oauth/token",
        "connect_url": f"{url}/oauth/authorize",
        "telemetry_min_interval": 60.0,
        "confirm_min_interval": 0.05,
        "request_timeout": 10.0,
    }
    values.update(overrides)
    return SmartcarSettings(**values)


def make_simulator(**overrides: Any) -> SmartcarSimulator:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "devices": 3,
        "bolt_seconds": 0.1,
        "wake_seconds": 0.2,
    }
    values.update(overrides)
    return SmartcarSimulator(**values)


@pytest.fixture
def sim() -> SmartcarSimulator:
    return make_simulator()


@pytest.fixture
async def served(sim: SmartcarSimulator) -> AsyncIterator[ServedApp]:
    async with serve_simulator(sim) as served:
        yield served


@pytest.fixture
def sink(tmp_path: Path) -> RecordingSink:
    return RecordingSink(data_dir=tmp_path / "data")


async def linked(settings: SmartcarSettings, sim: SmartcarSimulator, sink: RecordingSink) -> str:
    """Link the simulator's first user through the real code exchange; returns the user id."""
    user_id, _ = await link_account(settings, data_dir=sink.data_dir, code=sim.issue_code())
    return user_id


@pytest.fixture
async def adapter(served: ServedApp, sim: SmartcarSimulator, sink: RecordingSink) -> AsyncIterator[SmartcarAdapter]:
    settings = make_settings(served.url)
    await linked(settings, sim, sink)
    adapter = SmartcarAdapter(settings=settings)
    await adapter.start(sink)
    try:
        await adapter.list_devices()
        yield adapter
    finally:
        await adapter.stop()


@asynccontextmanager
async def running_adapter(
    sim: SmartcarSimulator, sink: RecordingSink, **overrides: Any
) -> AsyncIterator[SmartcarAdapter]:
    """Serve ``sim``, link its first user, start an adapter with these settings and list devices."""
    async with serve_simulator(sim) as served:
        settings = make_settings(served.url, **overrides)
        await linked(settings, sim, sink)
        adapter = SmartcarAdapter(settings=settings)
        await adapter.start(sink)
        try:
            await adapter.list_devices()
            yield adapter
        finally:
            await adapter.stop()
