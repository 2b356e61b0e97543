"""A planned desired field: one command per vendor call, redaction, retries and restarts."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from contracts.errors import ErrorCode
from tests.fake_adapter import FakeAdapter
from twin.adapter import VendorError
from twin.store import Store
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio

SECRETISH = "alpha-9999-1234"


async def test_each_planned_operation_is_a_command(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.codes["d1"] = {"old-code-5555": "gone"}
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.get("d1")
        final = await h.set("d1", {"codes": {SECRETISH: "guest", "beta-0000-5678": "cleaner"}})
        assert final["status"] == "succeeded", final
        ops = final["data"]["operations"]
        assert [(o["operation"], o["target"]) for o in ops] == [
            ("remove", "****5555"),
            ("put", "****1234"),
            ("put", "****5678"),
        ]
        assert adapter.codes["d1"] == {SECRETISH: "guest", "beta-0000-5678": "cleaner"}
        children = [e["data"] for e in h.events("d1", "command") if e["data"]["name"].startswith("codes.")]
        assert [(c["name"], c["to"]) for c in children] == [
            ("codes.remove", "sent"),
            ("codes.remove", "succeeded"),
            ("codes.put", "sent"),
            ("codes.put", "succeeded"),
            ("codes.put", "sent"),
            ("codes.put", "succeeded"),
        ]
        # a second identical /set plans nothing and succeeds on the reported state
        again = await h.set("d1", {"codes": {SECRETISH: "guest", "beta-0000-5678": "cleaner"}})
        assert again["status"] == "succeeded" and again["data"]["operations"] == []
        twin = await h.wait_retained("d1", "twin", lambda t: t["command"]["status"] == "succeeded")
        assert twin["reported"]["codes"] == {"****1234": "guest", "****5678": "cleaner"}
        # the full codes never reach anything locktwin publishes (only the user's own /set has them)
        for topic, payload, _retained, _ in h.messages:
            if not topic.endswith("/set"):
                assert SECRETISH.encode() not in payload, topic
    store = Store(path=tmp_path / "fake" / "twins.sqlite")
    store.open()
    journal = str(store.journal_entries("d1"))
    store.close()
    assert SECRETISH not in journal


async def test_failed_operation_is_retried_with_a_new_plan(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.get("d1")
        adapter.locks["d1"].errors.append(VendorError(ErrorCode.VENDOR_UNAVAILABLE, "503"))
        final = await h.set("d1", {"codes": {"one-1111": "a", "two-2222": "b"}, "expires_in": 10})
        assert final["status"] == "succeeded"
        statuses = [e["data"]["to"] for e in h.events("d1", "command") if e["data"]["name"] == "codes.put"]
        assert statuses.count("failed") == 1 and statuses.count("succeeded") == 2


async def test_non_retryable_operation_fails_the_set(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.get("d1")
        adapter.locks["d1"].errors.append(VendorError(ErrorCode.PERMISSION_DENIED, "no", vendor_code=1106))
        final = await h.set("d1", {"codes": {"one-1111": "a"}})
        assert final["status"] == "failed" and final["error"]["code"] == "PERMISSION_DENIED"


async def test_restart_mid_plan_plans_again(mqtt_broker: str, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].hang = True
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.publish(h.topic("d1", "set"), {"codes": {"one-1111": "a"}, "transaction": "p1", "expires_in": 30})
        await h.wait_for(lambda: ("d1", "code:one-1111") in adapter.calls)
        await h.wait_for(lambda: any(e["data"]["name"] == "codes.put" for e in h.events("d1", "command")))
        await h.stop_bridge()
        adapter.locks["d1"].hang = False
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            final = await h.final("d1", "p1")
            assert final["status"] == "succeeded"
            await h.stop_bridge()
        children = [e["data"] for e in h.events("d1", "command") if e["data"]["name"] == "codes.put"]
        assert [c["to"] for c in children] == ["sent", "failed", "sent", "succeeded"]
        assert adapter.codes["d1"] == {"one-1111": "a"}
