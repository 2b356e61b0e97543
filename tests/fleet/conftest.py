"""Fixtures of the fleet tests that need no broker: the request ops over a real store and index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from contracts.fleet import FleetTopics
from twin.fleet.clock import ManualClock
from twin.fleet.commands import CommandSender
from twin.fleet.index import FleetIndex
from twin.fleet.jobs import JobManager
from twin.fleet.requests import FleetRequests
from twin.fleet.search import Search
from twin.fleet.store import FleetStore
from twin.fleet.zones import ZoneBook


@pytest.fixture
def fleet_requests(tmp_path: Path) -> Iterator[FleetRequests]:
    store = FleetStore(path=tmp_path / "fleet.sqlite")
    store.open()
    sent: list[tuple[str, bytes, bool]] = []
    index = FleetIndex()
    search = Search(index=index)
    topics = FleetTopics("lt")
    sender = CommandSender(base="lt", reply_topic="r", publish=lambda t, p, props: None, grace=1.0)
    zones = ZoneBook(store=store, index=index, topics=topics, send=lambda t, p, r: sent.append((t, p, r)))
    jobs = JobManager(
        store=store,
        index=index,
        search=search,
        sender=sender,
        topics=topics,
        send=lambda t, p, r: sent.append((t, p, r)),
        clock=ManualClock(),
        ready=anyio.Event(),
    )
    yield FleetRequests(search=search, jobs=jobs, zones=zones, max_bytes=1024 * 1024)
    store.close()
