"""Idempotency, supersede, versions, drift and hold, retained refusal, v5 replies, restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.fake_adapter import FakeAdapter
from twin.config import BridgeOptions
from twin.store import Store
from twin.testing import BridgeHarness, v5_reply

pytestmark = pytest.mark.anyio


async def test_same_transaction_is_executed_once(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        first = await h.set("d1", {"lock": "UNLOCKED", "transaction": "same"})
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "same"})
        await h.wait_for(lambda: len([r for r in h.responses("d1") if r["transaction"] == "same"]) == 4)
        answers = [r for r in h.responses("d1") if r["transaction"] == "same"]
        assert [a["status"] for a in answers] == ["accepted", "succeeded", "accepted", "succeeded"]
        assert {a["command_id"] for a in answers} == {first["command_id"]}
        assert adapter.calls == [("d1", "unlock")]


async def test_newer_set_supersedes_unsent_command(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].hang = True  # the first command blocks the device's queue
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "a", "expires_in": 2})
        await h.wait_for(lambda: adapter.calls)
        await h.publish(h.topic("d1", "set"), {"lock": "LOCKED", "transaction": "b", "expires_in": 10})
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "c", "expires_in": 10})
        b = await h.final("d1", "b")
        assert b["status"] == "superseded"
        assert b["data"]["superseded_by_transaction"] == "c"
        adapter.locks["d1"].hang = False
        a = await h.final("d1", "a")
        # it reached the vendor, which never answered: not "expired" (that promises it was never sent)
        assert a["status"] == "failed" and a["error"]["code"] == "NOT_CONFIRMED"
        c = await h.final("d1", "c")
        assert c["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock"), ("d1", "unlock")]


async def test_if_version_mismatch_is_refused(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        twin = await h.wait_retained("d1", "twin")
        version = twin["version"]
        bad = await h.set("d1", {"lock": "UNLOCKED", "if_version": version + 5})
        assert bad["status"] == "rejected" and bad["error"]["code"] == "VERSION_CONFLICT"
        good = await h.set("d1", {"lock": "UNLOCKED", "if_version": version})
        assert good["status"] == "succeeded"
        after = await h.wait_retained("d1", "twin", lambda t: t["version"] > version)
        assert after["version"] > version
        assert adapter.calls == [("d1", "unlock")]


async def test_retained_command_is_refused_not_acted_on(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "r1"}, retain=True)
        refused = await h.final("d1", "r1")
        assert refused["status"] == "rejected" and refused["error"]["code"] == "RETAINED_COMMAND"
        # a bridge that starts later finds the retained command and refuses it too
        await h.stop_bridge()
        assert h.runtime is not None
        h.messages.clear()
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            again = await h.final("d1", "r1")
            assert again["error"]["code"] == "RETAINED_COMMAND"
            await h.publish(h.topic("d1", "set"), b"", retain=True)  # clear it
            await h.stop_bridge()
        assert adapter.calls == []


async def test_v5_response_topic_and_correlation_data(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        reply_topic = f"{h.base}-replies/me"
        await h.publish(h.topic("d1", "set"), "UNLOCK", properties=v5_reply(reply_topic, b"\x00corr\xff"))

        def answers() -> list[tuple[dict[str, object], bytes]]:
            return [
                (json.loads(p), props.CorrelationData)
                for t, p, _, props in h.messages
                if t == reply_topic and props is not None
            ]

        await h.wait_for(lambda: len(answers()) == 2)
        assert [a["status"] for a, _ in answers()] == ["accepted", "succeeded"]
        assert {c for _, c in answers()} == {b"\x00corr\xff"}
        assert h.responses("d1") == []


async def test_drift_is_reported_and_hold_relocks(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    options = BridgeOptions(hold=["d1"])
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, options=options) as h:
        await h.get("d1")
        await h.get("d2")
        adapter.locks["d1"].locked = False  # someone unlocked it with the vendor's app
        adapter.locks["d2"].locked = False
        await h.get("d1")
        await h.get("d2")
        drift = await h.wait_for(lambda: h.events("d1", "drift"))
        assert drift[0]["data"] == {"field": "lock", "from": "LOCKED", "to": "UNLOCKED", "source": "get"}
        assert h.events("d2", "drift")
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")
        assert adapter.calls == [("d1", "lock")]  # d2 is not held
        twin = h.retained_json("d1", "twin")
        assert twin["hold"] == "LOCKED" and twin["command"]["source"] == "hold"


async def test_unknown_device_and_garbage_answer_invalid(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("nope", "set"), {"lock": "LOCKED", "transaction": "u1"})
        unknown = await h.final("nope", "u1")
        assert unknown["error"]["code"] == "UNKNOWN_DEVICE"
        cases = {
            "g1": {"lock": "OPEN", "transaction": "g1"},
            "g2": {"lokc": "LOCKED", "transaction": "g2"},
            "g3": {"lock": "LOCKED", "expires_in": -1, "transaction": "g3"},
            "g4": {"transaction": "g4"},
        }
        for body in cases.values():
            await h.publish(h.topic("d1", "set"), body)
        for txn in cases:
            answer = await h.final("d1", txn)
            assert answer["status"] == "rejected" and answer["error"]["code"] == "INVALID_PAYLOAD", answer
        await h.publish(h.topic("d1", "set"), b"{not json")
        await h.wait_for(lambda: any(r["transaction"] is None for r in h.responses("d1")))
        assert adapter.calls == []


async def test_stale_command_is_refused_as_expired(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        issued = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
        stale = await h.set("d1", {"lock": "UNLOCKED", "issued_at": issued, "expires_in": 30})
        assert stale["status"] == "rejected" and stale["error"]["code"] == "EXPIRED"
        assert adapter.calls == []


async def test_restart_expires_old_commands_and_resumes_live_ones(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].hang = True
    adapter.locks["d2"].online = False
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "short", "expires_in": 0.5})
        await h.publish(h.topic("d1", "request/find"), {"transaction": "queued", "expires_in": 0.5})
        await h.publish(h.topic("d2", "set"), {"lock": "UNLOCKED", "transaction": "long", "expires_in": 30})
        await h.wait_for(lambda: ("d1", "unlock") in adapter.calls and ("d2", "unlock") in adapter.calls)
        await h.stop_bridge()  # a crash: both commands are open in the store
        store = Store(path=tmp_path / "fake" / "twins.sqlite")
        store.open()
        assert {c.transaction for c in store.open_commands()} == {"short", "queued", "long"}
        store.close()
        await anyio.sleep(0.6)
        adapter.calls.clear()
        adapter.locks["d1"].hang = False
        adapter.locks["d2"].online = True
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            # sent before the crash and past its expiry: its outcome is unknown, never "expired"
            short = await h.final("d1", "short")
            assert short["status"] == "failed" and short["error"]["code"] == "NOT_CONFIRMED"
            # accepted but never sent: expired, and never sent after the restart
            queued = await h.final("d1", "queued", "find")
            assert queued["status"] == "expired"
            long = await h.final("d2", "long")
            assert long["status"] == "succeeded"
            await h.stop_bridge()
        assert adapter.calls == [("d2", "unlock")]  # nothing past its expiry was sent again
        journal = Store(path=tmp_path / "fake" / "twins.sqlite")
        journal.open()
        entries = [e["entry"] for e in journal.journal_entries("d1")]
        journal.close()
        assert "request" in entries and "outcome" in entries


async def test_response_topic_inside_the_tree_is_refused(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        spoof = h.topic("d2", "state")
        body = {"lock": "UNLOCKED", "transaction": "spoof"}
        await h.publish(h.topic("d1", "set"), body, properties=v5_reply(spoof, b"x"))
        refused = await h.final("d1", "spoof")
        assert refused["status"] == "rejected" and refused["error"]["code"] == "INVALID_PAYLOAD"
        assert all(b"spoof" not in p for t, p, _, _ in h.messages if t == spoof)
        assert adapter.calls == []
