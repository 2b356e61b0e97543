"""Command lifecycle over a real mosquitto and a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import ErrorCode
from tests.fake_adapter import FakeAdapter
from twin.adapter import VendorError
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


def harness(adapter: FakeAdapter, broker: str, tmp_path: Path, **kw: object) -> BridgeHarness:
    return BridgeHarness(adapter=adapter, broker_url=broker, data_dir=tmp_path, **kw)  # type: ignore[arg-type]


async def test_set_lock_succeeds_after_confirmation(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].locked = False
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "LOCKED", "transaction": "t-1"})
        assert final["status"] == "succeeded"
        statuses = [r["status"] for r in h.responses("d1") if r["transaction"] == "t-1"]
        assert statuses == ["accepted", "succeeded"]
        state = await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")
        assert state["online"] is True and state["battery"] == 80
        twin = await h.wait_retained("d1", "twin", lambda t: t["command"]["status"] == "succeeded")
        assert twin["desired"] == {} and twin["reported"]["lock"] == "LOCKED"
        assert twin["metadata"]["lock"]["source"] in ("confirm", "poll", "command")
        transitions = [e["data"]["to"] for e in h.events("d1", "command")]
        assert transitions == ["accepted", "sent", "acknowledged", "succeeded"]


async def test_state_shows_unlocking_only_while_in_flight(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].bolt_seconds = 0.5
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED"})
        assert final["status"] == "succeeded"
        state, twin, event = h.topic("d1", "state"), h.topic("d1", "twin"), h.topic("d1", "event")
        seq = [(t, json.loads(p)) for t, p, _, _ in h.messages if t in (state, twin, event)]
        locks = [doc["lock"] for t, doc in seq if t == state]
        assert "UNLOCKING" in locks
        assert locks[-1] == "UNLOCKED"
        # never an optimistic final state: the first UNLOCKED state comes after the vendor accepted
        # the command, with a twin whose reported lock (what the vendor said) is UNLOCKED
        first = next(i for i, (t, doc) in enumerate(seq) if t == state and doc["lock"] == "UNLOCKED")
        acked = next(i for i, (t, doc) in enumerate(seq) if t == event and doc["data"].get("to") == "acknowledged")
        assert acked < first
        shown = [doc for t, doc in seq[:first] if t == twin][-1]
        assert shown["reported"]["lock"] == "UNLOCKED" and shown["metadata"]["lock"]["observed_at"] is not None


async def test_plain_home_assistant_payloads(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        await h.publish(h.topic("d1", "set"), "UNLOCK")
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "UNLOCKED")
        await h.publish(h.topic("d1", "set"), "LOCK")
        await h.wait_retained("d1", "state", lambda s: s["lock"] == "LOCKED")
        assert adapter.calls == [("d1", "unlock"), ("d1", "lock")]


async def test_never_moving_lock_fails_not_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].moves = False
    adapter.locks["d1"].locked = False
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "LOCKED", "expires_in": 1})
        assert final["status"] == "failed"
        assert final["error"]["code"] == ErrorCode.NOT_CONFIRMED
        state = await h.wait_retained("d1", "state", lambda s: s["lock"] != "LOCKING")
        assert state["lock"] == "UNLOCKED"


async def test_non_retryable_error_fails_without_retry(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].errors.append(
        VendorError(ErrorCode.DEVICE_BUSY, "riding", vendor_code=15600, vendor_message="vehicle is riding")
    )
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED"})
        assert final["status"] == "failed"
        assert final["error"] == {
            "code": "DEVICE_BUSY",
            "message": "riding",
            "vendor_code": "15600",
            "vendor_message": "vehicle is riding",
            "retryable": False,
            "retry_after": None,
        }
        assert adapter.calls == [("d1", "unlock")]


async def test_retryable_error_is_retried_then_succeeds(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].errors.extend(
        [VendorError(ErrorCode.VENDOR_UNAVAILABLE, "503"), VendorError(ErrorCode.RATE_LIMITED, "slow", retry_after=0.2)]
    )
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 10})
        assert final["status"] == "succeeded"
        assert adapter.calls == [("d1", "unlock")] * 3


async def test_offline_device_is_retried_until_expired(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].online = False
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 1.5})
        assert final["status"] == "expired"
        assert final["error"]["code"] == "EXPIRED"
        assert len(adapter.calls) >= 2
        twin = h.retained_json("d1", "twin")
        assert twin["desired"] == {}


async def test_action_returns_data_and_validates_arguments(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        ok = await h.request("d1", "find", {"volume": 3})
        assert ok["status"] == "succeeded" and ok["data"] == {"beeped": True, "volume": 3}
        bad = await h.request("d1", "find", {"volume": 9})
        assert bad["status"] == "rejected" and bad["error"]["code"] == "INVALID_PAYLOAD"
        assert "volume" in bad["error"]["message"]
        unknown = await h.request("d1", "fly")
        assert unknown["status"] == "rejected" and unknown["error"]["code"] == "UNSUPPORTED"
        assert adapter.calls == [("d1", "find")]


async def test_sensitive_action_answer_is_not_stored(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        ok = await h.request("d1", "get_secret_key")
        assert ok["data"] == {"secret_key": "K3Y-d1"}
        retained = [p for t, p, r, _ in h.messages if r or t.endswith(("/twin", "/state"))]
        assert all(b"K3Y" not in p for p in retained)
    db = (tmp_path / "fake" / "twins.sqlite").read_bytes()
    assert b"K3Y-d1" not in db


async def test_get_refreshes_from_vendor(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        adapter.locks["d2"].battery = 42
        answer = await h.get("d2")
        assert answer["status"] == "succeeded"
        assert answer["data"]["reported"]["battery"] == 42
        assert (await h.wait_retained("d2", "state", lambda s: s["battery"] == 42))["battery"] == 42
        adapter.locks["d2"].online = False
        failed = await h.get("d2")
        assert failed["status"] == "failed" and failed["error"]["code"] == "DEVICE_OFFLINE"


async def test_jammed_lock_fails_with_not_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    class JammingAdapter(FakeAdapter):
        async def read_status(self, device_id: str):  # type: ignore[no-untyped-def]
            patch = await super().read_status(device_id)
            if self.calls:
                patch.values["lock"] = "JAMMED"
            return patch

    adapter = JammingAdapter()
    adapter.locks["d1"].moves = False
    async with harness(adapter, mqtt_broker, tmp_path) as h:
        final = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 10})
        assert final["status"] == "failed"
        assert final["error"]["code"] == "NOT_CONFIRMED" and "jammed" in final["error"]["message"]
        state = await h.wait_retained("d1", "state", lambda s: s["lock"] == "JAMMED")
        assert state["lock"] == "JAMMED"


async def test_unanswered_calls_are_never_called_expired_nor_repeated(mqtt_broker: str, tmp_path: Path) -> None:
    from twin.config import BridgeOptions

    adapter = FakeAdapter()
    adapter.locks["d1"].hang = True  # the vendor takes the call and never answers
    options = BridgeOptions(call_timeout=0.3)
    async with harness(adapter, mqtt_broker, tmp_path, options=options) as h:
        # an action (not idempotent) whose call got no answer is failed at once, never sent twice
        action = await h.request("d1", "find", {"volume": 1})
        assert action["status"] == "failed" and action["error"]["code"] == "NOT_CONFIRMED"
        assert adapter.calls.count(("d1", "find")) == 1
        # a lock command is retried, but ends NOT_CONFIRMED rather than "expired" (it may have acted)
        lock = await h.set("d1", {"lock": "UNLOCKED", "expires_in": 1.5})
        assert lock["status"] == "failed" and lock["error"]["code"] == "NOT_CONFIRMED"
        assert "may still act" in lock["error"]["message"]
