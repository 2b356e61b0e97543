"""Two shards of one vendor on one broker: every device is served by exactly one of them."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.fake_adapter import FakeAdapter, FakeSettings
from twin.shard import Shard
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio

DEVICES = [f"s{i:02d}" for i in range(24)]


def test_shard_assignment_is_stable_and_total() -> None:
    for device in DEVICES:
        owners = [i for i in range(3) if Shard(i, 3).owns(device)]
        assert len(owners) == 1
    assert Shard.slot("SN0001", 4) == Shard.slot("SN0001", 4)
    assert Shard.parse("1/2") == Shard(1, 2)
    with pytest.raises(ValueError, match="0 <= I < N"):
        Shard.parse("2/2")


async def test_each_device_is_served_by_exactly_one_shard(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-shards-{uuid.uuid4().hex[:8]}"
    adapters = [FakeAdapter(settings=FakeSettings(devices=DEVICES)) for _ in range(2)]
    h0 = BridgeHarness(
        adapter=adapters[0], broker_url=mqtt_broker, data_dir=tmp_path, base_topic=base, shard=Shard(0, 2)
    )
    h1 = BridgeHarness(
        adapter=adapters[1], broker_url=mqtt_broker, data_dir=tmp_path, base_topic=base, shard=Shard(1, 2)
    )
    async with h0, h1:
        for device in [*DEVICES, "ghost"]:
            await h0.publish(h0.topic(device, "set"), {"lock": "UNLOCKED", "transaction": f"t-{device}"})
        for device in DEVICES:
            assert (await h0.final(device, f"t-{device}"))["status"] == "succeeded"
        ghost = await h0.final("ghost", "t-ghost")
        assert ghost["error"]["code"] == "UNKNOWN_DEVICE"
        answers = Counter(
            (r["transaction"], r["status"]) for device in [*DEVICES, "ghost"] for r in h0.responses(device)
        )
        assert all(n == 1 for n in answers.values()), answers
        served = [{d for d, _ in a.calls} for a in adapters]
        assert served[0].isdisjoint(served[1])
        assert served[0] | served[1] == set(DEVICES)
        assert served[0] and served[1]
        for shard in ("0-of-2", "1-of-2"):
            assert h0.retained.get(f"{base}/bridge/fake/shards/{shard}/state") == b"online"
    assert (tmp_path / "fake-0-of-2" / "twins.sqlite").exists()
    assert (tmp_path / "fake-1-of-2" / "twins.sqlite").exists()
