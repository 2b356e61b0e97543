"""Shared test helpers: a simulator served over real HTTP plus a started adapter or client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import OkaiClient
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from contracts.messages import EventType
from twin.adapter import CommandContext, ReportedPatch

__all__ = [
    "SIGN_KEY",
    "USER_KEY",
    "NullSink",
    "context",
    "served_adapter",
    "served_client",
    "settings_for",
]

USER_KEY = "4tz3oa28y5h1drnpubqgjf7km9l0c6xi"  # the document's example keys
SIGN_KEY = "lu4yjbmr18evxozc7ig0kf2h5stwaqd6"


def settings_for(base_url: str, sim: OkaiSimulator, **overrides: Any) -> OkaiSettings:
    values: dict[str, Any] = {
        "user_key": SecretStr(USER_KEY),
        "sign_key": SecretStr(SIGN_KEY) if sim.config.sign_key else None,
        "sign_params": sim.config.sign_params,
        "base_url": base_url,
        "devices": sim.fleet.imeis,
        "timeout": 5.0,
    }
    values.update(overrides)
    return OkaiSettings(**values)


class NullSink:
    def __init__(self, data_dir: Path | None = None) -> None:
        self._data_dir = data_dir or Path(".")
        self.reports: list[tuple[str, ReportedPatch]] = []

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        self.reports.append((device_id, patch))
        return True

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        return None


@asynccontextmanager
async def served_client(sim: OkaiSimulator, **overrides: Any) -> AsyncIterator[OkaiClient]:
    async with serve_simulator(sim) as base_url:
        client = OkaiClient(settings=settings_for(base_url, sim, **overrides))
        await client.open()
        try:
            yield client
        finally:
            await client.aclose()


@asynccontextmanager
async def served_adapter(sim: OkaiSimulator, **overrides: Any) -> AsyncIterator[OkaiAdapter]:
    async with serve_simulator(sim) as base_url:
        adapter = OkaiAdapter(settings=settings_for(base_url, sim, **overrides))
        await adapter.start(NullSink())
        try:
            yield adapter
        finally:
            await adapter.stop()


def context(device_id: str, *, seconds: float = 30.0, name: str = "lock") -> CommandContext:
    return CommandContext(
        command_id=uuid.uuid4().hex,
        transaction=None,
        device_id=device_id,
        name=name,
        expires_at=datetime.now(UTC) + timedelta(seconds=seconds),
        attempt=1,
    )
