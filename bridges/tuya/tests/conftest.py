"""Fixtures: a Tuya simulator served over real HTTP, and a client logged in to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bridges.tuya.client import TuyaClient
from bridges.tuya.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TuyaSimulator, serve_simulator
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
