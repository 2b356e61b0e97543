"""Fixtures: a Tuya simulator served over real HTTP, and a client logged in to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
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
from contracts.messages import EventType
from twin.adapter import CommandContext, ReportedPatch
from twin.asgi import ServedApp


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


class Sink:
    """A BridgeSink for adapter tests without the runtime."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self.reports: list[tuple[str, ReportedPatch]] = []
        self.events: list[tuple[str, EventType, dict[str, Any]]] = []

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        self.reports.append((device_id, patch))
        return True

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        self.events.append((device_id, type, data))


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


def context(device_id: str, name: str = "lock") -> CommandContext:
    return CommandContext(
        command_id="c1",
        transaction=None,
        device_id=device_id,
        name=name,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
        attempt=1,
    )


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return Sink(tmp_path)


@pytest.fixture
async def adapter(sim: TuyaSimulator, served: ServedApp, sink: Sink) -> AsyncIterator[TuyaAdapter]:
    adapter = TuyaAdapter(settings=tuya_settings(sim, served))
    await adapter.start(sink)
    try:
        yield adapter
    finally:
        await adapter.stop()
