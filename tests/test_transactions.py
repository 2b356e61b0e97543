"""Transactions: the same command again is a replay, another command under a used transaction is
refused, a refusal is never dressed up as a stored command's answer, and an empty retained payload
(clearing a retained /set from the broker) is no command at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fake_adapter import FakeAdapter
from twin.testing import BridgeHarness, v5_reply

pytestmark = pytest.mark.anyio


def on_reply(h: BridgeHarness, topic: str) -> list[dict[str, object]]:
    return [json.loads(p) for t, p, _, _ in h.messages if t == topic]


async def test_same_command_again_is_a_replay(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        first = await h.set("d1", {"lock": "UNLOCKED", "transaction": "t-same"})
        assert first["status"] == "succeeded"
        calls = len(adapter.calls)
        reply = f"{h.base}-replies/again"
        await h.publish(
            h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "t-same"}, properties=v5_reply(reply, b"c1")
        )
        answers = await h.wait_for(lambda: len(on_reply(h, reply)) >= 2 and on_reply(h, reply))
        assert [a["status"] for a in answers] == ["accepted", "succeeded"]
        assert {a["command_id"] for a in answers} == {first["command_id"]}
        assert len(adapter.calls) == calls  # no second vendor call


async def test_a_transaction_reused_for_another_command_is_refused(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        first = await h.set("d1", {"lock": "UNLOCKED", "transaction": "t-reuse"})
        assert first["status"] == "succeeded"
        calls = len(adapter.calls)
        for n, body in enumerate(
            [
                {"lock": "LOCKED", "transaction": "t-reuse"},  # another value
                {"transaction": "t-reuse", "volume": 3},  # an action, below
            ]
        ):
            reply = f"{h.base}-replies/reuse-{n}"
            topic = h.topic("d1", "set") if n == 0 else h.topic("d1", "request/find")
            await h.publish(topic, body, properties=v5_reply(reply, b"c%d" % n))
            [answer] = await h.wait_for(lambda reply=reply: on_reply(h, reply))
            assert answer["status"] == "rejected"
            error = answer["error"]
            assert isinstance(error, dict) and error["code"] == "TRANSACTION_REUSED", answer
            assert "t-reuse" in str(error["message"])
            # not the stored command's answer: no transaction, no command id
            assert answer["transaction"] is None and answer["command_id"] is None
        assert len(adapter.calls) == calls
        assert h.retained_json("d1", "state")["lock"] == "UNLOCKED"


async def test_a_bad_payload_never_answers_as_a_stored_command(mqtt_broker: str, tmp_path: Path) -> None:
    """An invalid /set naming a stored command's transaction (a forged one, for example) is answered
    as the refused payload it is, not as that command."""
    async with BridgeHarness(adapter=FakeAdapter(), broker_url=mqtt_broker, data_dir=tmp_path) as h:
        first = await h.set("d1", {"lock": "UNLOCKED", "transaction": "op-real-1"})
        reply = f"{h.base}-replies/forged"
        await h.publish(
            h.topic("d1", "set"), {"lock": "OPEN", "transaction": "op-real-1"}, properties=v5_reply(reply, b"x")
        )
        [answer] = await h.wait_for(lambda: on_reply(h, reply))
        assert answer["status"] == "rejected" and answer["error"]["code"] == "INVALID_PAYLOAD"  # type: ignore[index]
        assert answer["transaction"] is None
        # a transaction nobody used keeps its name, so its sender can match the refusal
        await h.publish(h.topic("d1", "set"), {"lock": "OPEN", "transaction": "fresh-1"})
        refused = await h.final("d1", "fresh-1")
        assert refused["status"] == "rejected"
        assert [r["status"] for r in h.responses("d1") if r["transaction"] == "op-real-1"] == ["accepted", "succeeded"]
        assert first["status"] == "succeeded"


async def test_clearing_a_retained_set_is_not_a_command(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), "UNLOCK", retain=True)  # a mistake: refused
        refused = await h.wait_for(lambda: h.responses("d1"))
        assert [r["error"]["code"] for r in refused] == ["RETAINED_COMMAND"]
        await h.publish(h.topic("d1", "set"), b"", retain=True)  # the documented way to remove it
        # answers come in order: once the next command's are here, the empty payload got none
        final = await h.set("d1", {"lock": "UNLOCKED"})
        assert final["status"] == "succeeded"
        statuses = [r["status"] for r in h.responses("d1")]
        assert statuses == ["rejected", "accepted", "succeeded"], statuses
