"""A device's retained twin and state are coalesced (twin.outbound): one publish per window, no
identical republish, and every answer about a device goes out after that device's pending documents."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_adapter import FakeAdapter
from twin.config import BridgeOptions
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def _device_messages(h: BridgeHarness, device: str, start: int = 0) -> list[tuple[str, bytes]]:
    """What the observer received under ``<base>/fake/<device>/``, in arrival order."""
    prefix = h.topic(device, "")
    return [(t, p) for t, p, _, _ in h.messages[start:] if t.startswith(prefix)]


def _index_of_answer(msgs: list[tuple[str, bytes]], topic: str, transaction: str, status: str) -> int:
    for i, (t, p) in enumerate(msgs):
        if t == topic:
            doc = json.loads(p)
            if doc["transaction"] == transaction and doc["status"] == status:
                return i
    raise AssertionError(f"no {status} answer for {transaction} on {topic}")


def _docs(msgs: list[tuple[str, bytes]], topic: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in msgs if t == topic]


@pytest.mark.parametrize("coalesce", [None, 0.5], ids=["default-window", "half-second-window"])
async def test_retained_twin_and_state_match_before_the_final_answer(
    mqtt_broker: str, tmp_path: Path, coalesce: float | None
) -> None:
    adapter = FakeAdapter()
    options = None if coalesce is None else BridgeOptions(publish_coalesce=coalesce)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        await h.get("d1")  # its answer comes after d1's startup documents
        start = len(h.messages)
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 10})
        assert final["status"] == "succeeded"
        msgs = _device_messages(h, "d1", start)
        answer = _index_of_answer(msgs, h.topic("d1", "response/set"), final["transaction"], "succeeded")
        twins = _docs(msgs[:answer], h.topic("d1", "twin"))
        assert twins, "no twin was published before the final answer"
        twin = twins[-1]
        assert twin["command"]["transaction"] == final["transaction"]
        assert twin["command"]["status"] == "succeeded"
        assert twin["reported"]["lock"] == "UNLOCKED"
        assert twin["delta"] == {}
        states = _docs(msgs[:answer], h.topic("d1", "state"))
        assert states and states[-1]["lock"] == "UNLOCKED"


async def test_get_answer_follows_the_documents_it_changed(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    options = BridgeOptions(publish_coalesce=2.0)  # far longer than the answer takes
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        await h.get("d1")
        start = len(h.messages)
        adapter.locks["d1"].locked = False  # changed outside the bridge: the next read sees it
        answer = await h.get("d1")
        assert answer["data"]["reported"]["lock"] == "UNLOCKED"
        msgs = _device_messages(h, "d1", start)
        at = _index_of_answer(msgs, h.topic("d1", "response/get"), answer["transaction"], "succeeded")
        twins = _docs(msgs[:at], h.topic("d1", "twin"))
        assert twins and twins[-1]["reported"]["lock"] == "UNLOCKED"
        states = _docs(msgs[:at], h.topic("d1", "state"))
        assert states and states[-1]["lock"] == "UNLOCKED"


@pytest.mark.parametrize("coalesce", [0.0, None], ids=["no-window", "default-window"])
async def test_state_is_not_republished_unchanged(mqtt_broker: str, tmp_path: Path, coalesce: float | None) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].bolt_seconds = 0.5  # UNLOCKING is published well before the bolt moves
    options = None if coalesce is None else BridgeOptions(publish_coalesce=coalesce)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        await h.get("d1")
        start = len(h.messages)
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 10})
        assert final["status"] == "succeeded"
        await h.get("d1")  # its answer comes after anything still pending for d1
        topic = h.topic("d1", "state")
        payloads = [p for t, p, _, _ in h.messages if t == topic]  # the whole run, startup included
        repeats = [json.loads(a) for a, b in itertools.pairwise(payloads) if a == b]
        assert repeats == [], "state published twice in a row with the same payload"
        locks = [json.loads(p)["lock"] for t, p in _device_messages(h, "d1", start) if t == topic]
        assert "UNLOCKING" in locks and locks[-1] == "UNLOCKED"  # the command did publish states


async def test_one_window_coalesces_a_commands_twin_publishes(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].bolt_seconds = 0.2
    options = BridgeOptions(publish_coalesce=0.5)
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        await h.get("d1")
        start = len(h.messages)
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 10})
        assert final["status"] == "succeeded"
        # The transitions (accepted, sent, acknowledged, observed, succeeded) did happen ...
        steps = [e["data"]["to"] for e in h.events("d1", "command") if e["data"]["command_id"] == final["command_id"]]
        assert steps == ["accepted", "sent", "acknowledged", "succeeded"]
        # ... a get's answer comes after anything still pending for d1 (a flush at the window's end)
        barrier = await h.get("d1")
        msgs = _device_messages(h, "d1", start)
        end = _index_of_answer(msgs, h.topic("d1", "response/get"), barrier["transaction"], "succeeded")
        twins = _docs(msgs[:end], h.topic("d1", "twin"))
        assert 1 <= len(twins) <= 3, [t["command"] and t["command"]["status"] for t in twins]
        last = twins[-1]
        assert last["command"]["command_id"] == final["command_id"]
        assert last["command"]["status"] == "succeeded"
        assert last["reported"]["lock"] == "UNLOCKED"
