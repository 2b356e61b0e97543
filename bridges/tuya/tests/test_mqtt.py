"""The Tuya bridge over a real mosquitto, talking real HTTP to the simulator (the issue's proof)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.simulator import TuyaSimulator, serve_simulator
from twin.testing import BridgeHarness
from twin.testing_fakes import FakeClock

from .conftest import tuya_settings

pytestmark = pytest.mark.anyio

T0 = datetime.now(UTC).replace(microsecond=0)


def window(days: int, *, frozen: bool = False) -> dict[str, Any]:
    return {"begin": T0.isoformat(), "end": (T0 + timedelta(days=days)).isoformat(), "frozen": frozen}


@asynccontextmanager
async def bridge(
    sim: TuyaSimulator, broker: str, data_dir: Path, *, clock: FakeClock | None = None, **overrides: Any
) -> AsyncIterator[BridgeHarness]:
    async with serve_simulator(sim) as served:
        settings = tuya_settings(sim, served, **{"poll_interval": 30.0, **overrides})
        adapter = TuyaAdapter(settings=settings, **({} if clock is None else {"clock": clock}))
        async with BridgeHarness(adapter=adapter, broker_url=broker, data_dir=data_dir) as harness:
            yield harness


async def test_mqtt_lock_unlock_confirmed_by_status(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.1)
    device = sim.device_ids[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        unlocked = await h.set(device, {"lock": "UNLOCKED", "expires_in": 20})
        assert unlocked["status"] == "succeeded", unlocked
        state = await h.wait_retained(device, "state", lambda s: s["lock"] == "UNLOCKED")
        locked = await h.set(device, {"lock": "LOCKED", "expires_in": 20})
        assert locked["status"] == "succeeded", locked
        await h.wait_retained(device, "state", lambda s: s["lock"] == "LOCKED")
    assert state["online"] is True
    assert state["battery"] == 87.0
    assert state["door_open"] is False
    assert state.get("last_alarm") is None
    operates = [c.body for c in sim.calls if c.path.endswith("door-operate")]
    assert [b["open"] for b in operates] == [True, False]
    assert sim.fleet[device].locked is True


async def test_mqtt_lock_inverted_polarity_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    sim.fleet[device].inverted_polarity = True
    async with bridge(sim, mqtt_broker, tmp_path, lock_polarity={device: "true_is_unlocked"}) as h:
        unlocked = await h.set(device, {"lock": "UNLOCKED", "expires_in": 20})
        assert unlocked["status"] == "succeeded", unlocked
    assert sim.fleet[device].locked is False


async def test_mqtt_lock_accepted_never_moves_not_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    sim.fleet[device].stuck = True
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": 2})
        state = h.retained_json(device, "state")
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "NOT_CONFIRMED"
    assert state["lock"] == "LOCKED"


async def test_mqtt_lock_jammed_fails(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    sim.fleet[device].jammed = True
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": 20})
        state = await h.wait_retained(device, "state", lambda s: s["lock"] == "JAMMED")
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "NOT_CONFIRMED"
    assert state["last_alarm"] == "tongue_bad"


async def test_mqtt_offline_lock_retried_until_back(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    lock.force_offline()
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        await h.publish(h.topic(device, "set"), {"transaction": "back-online", "lock": "UNLOCKED", "expires_in": 20})
        await h.wait_for(lambda: any(c.path.endswith("door-operate") for c in sim.calls))
        lock.force_offline(False)
        final = await h.final(device, "back-online")
    assert final["status"] == "succeeded", final
    assert lock.locked is False


async def test_mqtt_card_reconciliation(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05)
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    foreign = lock.issue_card("FOREIGN-0007")

    seen = 0

    def card_calls() -> list[tuple[str, str]]:
        # the card operations (not queries) since the last look: (method, freeze-status or "")
        nonlocal seen
        new, seen = sim.calls[seen:], len(sim.calls)
        return [
            (c.method, "freeze-status" if c.path.endswith("freeze-status") else "")
            for c in new
            if "/osaas/" in c.path and "/cloud/" not in c.path
        ]

    def cards_on_lock() -> dict[str, tuple[int, int, bool]]:
        return {c.card_id: (c.begin_time, c.end_time, c.frozen) for c in lock.cards.values()}

    async with bridge(sim, mqtt_broker, tmp_path) as h:
        added = await h.set(device, {"cards": {"CARD-A-1111": window(30), "CARD-B-2222": window(10)}})
        assert added["status"] == "succeeded", added
        assert sorted(card_calls()) == [("POST", ""), ("POST", ""), ("PUT", ""), ("PUT", "")]
        state = await h.wait_retained(device, "state", lambda s: len(s.get("cards", {})) == 2)
        assert set(state["cards"]) == {"****1111", "****2222"}

        changed = await h.set(device, {"cards": {"CARD-A-1111": window(60), "CARD-B-2222": window(10, frozen=True)}})
        assert changed["status"] == "succeeded", changed
        assert sorted(card_calls()) == [("PUT", ""), ("PUT", "freeze-status")]
        assert cards_on_lock()["CARD-A-1111"][1] == int((T0 + timedelta(days=60)).timestamp() * 1000)
        assert cards_on_lock()["CARD-B-2222"][2] is True

        removed = await h.set(device, {"cards": {"CARD-B-2222": window(10, frozen=True)}})
        assert removed["status"] == "succeeded", removed
        assert card_calls() == [("DELETE", "")]
        state = await h.wait_retained(device, "state", lambda s: set(s.get("cards", {})) == {"****2222"})
        assert state["cards"]["****2222"]["frozen"] is True

        emptied = await h.set(device, {"cards": {}})
        assert emptied["status"] == "succeeded", emptied
        await h.wait_retained(device, "state", lambda s: s.get("cards") == {})
        # everything locktwin published (all but the test's own /set messages): masked ids only
        published = [p for t, p, _, _ in h.messages if t != h.topic(device, "set")]
        # each card operation is a command of its own, under its /set
        audit = [
            e["data"]
            for e in h.events(device, "command")
            if e["data"]["name"].startswith("cards.") and e["data"]["to"] == "succeeded"
        ]
    assert [a["name"] for a in audit].count("cards.issue") == 2
    assert {a["parent"] for a in audit} >= {added["command_id"], removed["command_id"]}
    assert all(a["target"].startswith("****") for a in audit)
    assert list(lock.cards.values()) == [foreign]  # issued elsewhere: never deleted
    assert all(b"CARD-A" not in p and b"CARD-B" not in p and b"FOREIGN" not in p for p in published)
    managed = json.loads((tmp_path / "tuya" / "cards.json").read_text())
    assert managed["devices"] == {device: {}}


async def test_mqtt_card_set_rejects_bad_window(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1)
    device = sim.device_ids[0]
    bad = {"CARD-A-1111": {"begin": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        final = await h.set(device, {"cards": bad})
    assert final["status"] == "rejected"
    assert final["error"]["code"] == "INVALID_PAYLOAD"
    assert not any("/cards" in c.path for c in sim.calls)


async def test_mqtt_every_user_endpoint_through_request(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1)
    device = sim.device_ids[0]
    lock = sim.fleet[device]
    guest = next(u.user_id for u in lock.users.values() if u.nick_name == "Guest")
    owner_uid = next(u.uid for u in lock.users.values() if u.user_type == 50)
    unlock = [{"dp_code": "unlock_card", "unlock_sn": 1}]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        added = await h.request(device, "add_user", {"nick_name": "Ann", "sex": 2})
        assert added["status"] == "succeeded", added
        ann = added["data"]["user_id"]
        requests: list[tuple[str, dict[str, Any]]] = [
            ("list_users", {"keyword": "", "role": "", "page_no": 1, "page_size": 2}),
            ("list_users_v1", {}),
            ("list_lock_users", {"codes": ["unlock_card", "unlock_password"], "page_no": 1, "page_size": 10}),
            ("get_user", {"user_id": ann}),
            ("get_user_v1", {"user_id": ann}),
            ("update_user", {"user_id": ann, "nick_name": "Anna", "sex": 2}),
            ("set_user_role", {"user_id": ann, "role": "admin"}),
            (
                "set_user_schedule",
                {
                    "user_id": ann,
                    "permanent": True,
                    "schedule_details": [{"start_minute": 0, "end_minute": 1440, "working_day": 127}],
                },
            ),
            ("allocate_unlock_method", {"user_id": ann, "unlock_list": unlock}),
            ("allocate_unlock_method_by_number", {"user_id": ann, "no": "2", "type": "password"}),
            ("list_unlock_methods", {"user_id": ann, "page_no": 1, "page_size": 10}),
            ("cancel_unlock_allocation", {"user_id": ann, "unlock_list": unlock}),
            ("list_absent_users", {}),
            ("list_user_devices", {"uid": owner_uid}),
            ("delete_users_issue", {"user_ids": [guest]}),
            ("delete_user", {"user_id": ann}),
        ]
        answers = {name: await h.request(device, name, payload) for name, payload in requests}
        bad = await h.request(
            device,
            "set_user_schedule",
            {
                "user_id": ann,
                "permanent": True,
                "schedule_details": [{"start_minute": 0, "end_minute": 1500, "working_day": 1}],
            },
        )
    for name, answer in answers.items():
        assert answer["status"] == "succeeded", (name, answer)
    assert answers["list_users"]["data"]["has_more"] is True
    assert answers["list_users"]["data"]["total"] == 4
    assert [m["dp_code"] for m in answers["list_unlock_methods"]["data"]["result"]] == [
        "unlock_password",
        "unlock_card",
    ] or {m["dp_code"] for m in answers["list_unlock_methods"]["data"]["result"]} == {"unlock_password", "unlock_card"}
    assert lock.users.keys().isdisjoint({ann, guest})
    assert answers["list_user_devices"]["data"]["records"][0]["local_key"] == lock.local_key
    retained = b"".join(p for _, p, r, _ in h.messages if r)
    assert lock.local_key.encode() not in retained  # sensitive: answered once, kept nowhere retained
    assert bad["status"] == "rejected"
    assert bad["error"]["code"] == "INVALID_PAYLOAD"


async def test_mqtt_card_requests(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1)
    device = sim.device_ids[0]
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        issued = await h.request(device, "issue_card", {"card_id": "CARD-9999"})
        lock_card_id = issued["data"]["lock_card_id"]
        ref = {"lock_card_id": lock_card_id}
        modified = await h.request(
            device, "modify_card", {**ref, **{k: v for k, v in window(5).items() if k != "frozen"}}
        )
        frozen = await h.request(device, "freeze_card", {**ref, "frozen": True})
        card = await h.request(device, "get_card", ref)
        deleted = await h.request(device, "delete_card", ref)
        gone = await h.request(device, "get_card", ref)
    for answer in (issued, modified, frozen, card, deleted):
        assert answer["status"] == "succeeded", answer
    assert card["data"]["end_time"] == int((T0 + timedelta(days=5)).timestamp() * 1000)
    assert gone["status"] == "failed"
    assert gone["error"]["vendor_code"] == "1000"


async def test_mqtt_token_expiry_and_one_time_refresh(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1, bolt_seconds=0.05, token_lifetime=100.0)
    device = sim.device_ids[0]
    clock = FakeClock()
    async with bridge(sim, mqtt_broker, tmp_path, clock=clock) as h:
        for _ in range(3):
            answer = await h.request(device, "list_absent_users", {})
            assert answer["status"] == "succeeded", answer
            clock.advance(60.0)  # past the refresh point (half of its life, the margin being 60 s)
        sim.tokens.expire_all()  # an expiry the client did not see coming: 1010, refresh, retry once
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": 20})
        assert final["status"] == "succeeded", final
    assert sim.tokens.grants == 1
    assert sim.tokens.refreshes >= 3
    refreshes = [c.path for c in sim.calls if c.path.startswith("/v1.0/token/")]
    assert len(refreshes) == len(set(refreshes))  # each refresh token used once


async def test_mqtt_rate_limited_request_retried(mqtt_broker: str, tmp_path: Path) -> None:
    sim = TuyaSimulator(devices=1)
    device = sim.device_ids[0]
    sim.inject(1111, count=2, path_contains="absent-users")
    async with bridge(sim, mqtt_broker, tmp_path) as h:
        answer = await h.request(device, "list_absent_users", {"expires_in": 20})
    assert answer["status"] == "succeeded", answer
    assert [c.path for c in sim.calls].count(f"/v1.0/devices/{device}/door-lock/absent-users") == 3
