"""Fixtures: a Tuya simulator served over real HTTP, and a client logged in to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.client import TuyaClient
from bridges.tuya.settings import TuyaSettings
from bridges.tuya.simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PROJECT_ID,
    TuyaSimulator,
    serve_simulator,
)
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink

__all__ = ["tuya_settings"]


@pytest.fixture
def sim() -> TuyaSimulator:
    return TuyaSimulator(devices=2, bolt_seconds=0.05)


@pytest.fixture
async def served(sim: TuyaSimulator) -> AsyncIterator[ServedApp]:
    async with serve_simulator(sim) as served:
        yield served


@pytest.fixture
async def client(served: ServedApp) -> AsyncIterator[TuyaClient]:
    async with TuyaClient(
        base_url=served.url, client_id=DEFAULT_CLIENT_ID, secret=SecretStr(DEFAULT_CLIENT_SECRET)
    ) as client:
        yield client


def tuya_settings(sim: TuyaSimulator, served: ServedApp, **overrides: Any) -> TuyaSettings:
    values: dict[str, Any] = {
        "base_url": served.url,
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "project_id": DEFAULT_PROJECT_ID,
        "devices": sim.device_ids,
        "poll_interval": 30.0,
        **overrides,
    }
    return TuyaSettings(**values)


@pytest.fixture
def sink(tmp_path: Path) -> RecordingSink:
    return RecordingSink(data_dir=tmp_path)


@pytest.fixture
async def adapter(sim: TuyaSimulator, served: ServedApp, sink: RecordingSink) -> AsyncIterator[TuyaAdapter]:
    adapter = TuyaAdapter(settings=tuya_settings(sim, served))
    await adapter.start(sink)
    try:
        yield adapter
    finally:
        await adapter.stop()
