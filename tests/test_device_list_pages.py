"""The retained device list of a large fleet goes in pages that fit the broker's Maximum Packet Size.

Brokers close the connection of a client that sends a larger packet (mosquitto's max_packet_size,
EMQX's 1 MB default); a bridge whose device list did not fit lost its connection on every (re)connect."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from contracts.messages import BridgeDevices
from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.publisher import packet_size
from twin.testing import BridgeHarness, MosquittoBroker

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary"),
]

LIMIT = 4096


def _pages(h: BridgeHarness) -> list[BridgeDevices] | None:
    first = h.retained.get(f"{h.base}/bridge/fake/devices")
    if not first:
        return None
    count = BridgeDevices.model_validate_json(first).pages
    topics = [f"{h.base}/bridge/fake/devices"] + [f"{h.base}/bridge/fake/devices/{n}" for n in range(1, count)]
    if not all(h.retained.get(t) for t in topics):
        return None
    for t in topics:
        assert packet_size(t, h.retained[t], None) <= LIMIT, t
    return [BridgeDevices.model_validate_json(h.retained[t]) for t in topics]


async def test_a_device_list_larger_than_a_packet_goes_in_pages_and_shrinks(tmp_path: Path) -> None:
    broker = MosquittoBroker(workdir=tmp_path / "broker", extra_config=f"max_packet_size {LIMIT}\n")
    broker.workdir.mkdir()
    broker.start()
    fleet = [f"lock-{i:04d}" for i in range(300)]  # ~60 bytes each: ~18 KB of list
    lost = REGISTRY.get_sample_value("locktwin_mqtt_reconnects_total", {"vendor": "fake"}) or 0.0
    try:
        adapter = FakeAdapter(settings=FakeSettings(devices=fleet))
        async with BridgeHarness(adapter=adapter, broker_url=broker.url, data_dir=tmp_path / "data") as h:
            pages = await h.wait_for(lambda: _pages(h))
            assert len(pages) > 3
            assert [p.page for p in pages] == list(range(len(pages)))
            assert {p.pages for p in pages} == {len(pages)}
            assert [d.id for p in pages for d in p.devices] == fleet
            # the connection held: a command on the last device goes through
            assert (await h.set("lock-0299", {"lock": "UNLOCKED"}))["status"] == "succeeded"
            assert (REGISTRY.get_sample_value("locktwin_mqtt_reconnects_total", {"vendor": "fake"}) or 0.0) == lost
            base, before = h.base, len(pages)

        # fewer devices at the next start: the pages the longer list left behind are deleted
        adapter = FakeAdapter(settings=FakeSettings(devices=fleet[:10]))
        async with BridgeHarness(
            adapter=adapter, broker_url=broker.url, data_dir=tmp_path / "data", base_topic=base
        ) as h:
            stale = [f"{base}/bridge/fake/devices/{n}" for n in range(1, before)]
            await h.wait_for(lambda: all(h.retained.get(t) == b"" for t in stale))
            pages = await h.wait_for(lambda: (p := _pages(h)) and p[0].pages == 1 and p)
            assert [d.id for d in pages[0].devices] == fleet[:10]
    finally:
        broker.stop()
