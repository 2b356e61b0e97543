"""Shared test helpers: a simulator served over real HTTP plus a started adapter or client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import OkaiClient
from bridges.okai.settings import OkaiSettings
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from twin.testing_fakes import RecordingSink

__all__ = [
    "SIGN_KEY",
    "USER_KEY",
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
        await adapter.start(RecordingSink())
        try:
            yield adapter
        finally:
            await adapter.stop()
