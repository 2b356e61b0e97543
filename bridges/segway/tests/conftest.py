"""Fixtures of the Segway tests: a simulator served over real HTTP, settings, client, sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from bridges.segway.client import SegwayClient
from bridges.segway.settings import SegwaySettings
from bridges.segway.simulator import SegwaySimulator
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink

__all__ = [
    "CLIENT_ID",
    "DEVICES",
    "SECRET",
    "make_settings",
]

CLIENT_ID = "E20081"
SECRET = "e2651be5-12d3-48f3-ba6c-bc2b04a447b6"
DEVICES = ["861477038719116", "861477038719117", "861477038719118"]


@pytest.fixture
def sim() -> SegwaySimulator:
    return SegwaySimulator(
        client_id=CLIENT_ID,
        client_secret=SECRET,
        devices=DEVICES,
        bolt_seconds=0.05,
        push_retry_delay=0.1,
        tick=0.02,
    )


@pytest.fixture
async def served(sim: SegwaySimulator) -> AsyncIterator[ServedApp]:
    async with sim.serve() as served:
        yield served


def make_settings(base_url: str | None, **overrides: Any) -> SegwaySettings:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(SECRET),
        "base_url": base_url,
        "devices": DEVICES,
        "request_timeout": 2.0,
    }
    values.update(overrides)
    return SegwaySettings(**values)


@pytest.fixture
def settings(served: ServedApp) -> SegwaySettings:
    return make_settings(served.url)


@pytest.fixture
async def client(settings: SegwaySettings) -> AsyncIterator[SegwayClient]:
    async with SegwayClient(settings=settings) as c:
        yield c


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink.of(DEVICES)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (polling: physics run on real time)."""
    with anyio.fail_after(timeout):
        for _ in range(1_000_000):
            if await check():
                return
            await anyio.sleep(0.02)
