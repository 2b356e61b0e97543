"""Zones against a polled fake vendor: a file and requests, entered/left events, zones as query
terms and job targets, and the keep-locked rule."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts.fleet import ZoneDocument, ZoneEvent, ZoneList
from tests.fake_adapter import FakeSettings

from .helpers import FINAL_JOB, PolledFake, eventually, fake_bridge, running_fleet

pytestmark = pytest.mark.anyio

OUTSIDE = (52.3000, 4.8000)
INSIDE = (52.3702, 4.8952)
OLD_TOWN = {  # a square around INSIDE, GeoJSON order (longitude, latitude)
    "type": "Polygon",
    "coordinates": [[[4.885, 52.365], [4.905, 52.365], [4.905, 52.375], [4.885, 52.375], [4.885, 52.365]]],
}


async def test_zone_events_queries_jobs_and_keep_locked(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fz-{uuid.uuid4().hex[:8]}"
    ids = ["z0", "z1", "z2", "z3"]
    adapter = PolledFake(settings=FakeSettings(devices=ids))
    for device in ids:
        adapter.locks[device].position = OUTSIDE
    adapter.locks["z0"].position = INSIDE
    zones_file = tmp_path / "zones.geojson"
    zones_file.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": "station",
                        "properties": {"name": "Station"},
                        "geometry": {"type": "Point", "coordinates": [4.8000, 52.3000], "radius_m": 50},
                    },
                ],
            }
        )
    )
    async with (
        fake_bridge(mqtt_broker, tmp_path / "b", base, ids, adapter=adapter) as bridge,
        running_fleet(mqtt_broker, tmp_path / "f", base, zones_file=zones_file) as (service, probe),
    ):

        async def members(q: str) -> list[str]:
            answer = await probe.request("query", {"q": q})
            assert answer["status"] == "succeeded", answer
            return sorted(r["device"] for r in answer["data"]["rows"])

        async def until(q: str, expected: list[str]) -> None:
            async def check() -> bool:
                return await members(q) == expected

            await eventually(check)

        await until("zone=station", ["z1", "z2", "z3"])  # from the file; loaded states raise no events
        put = await probe.request(
            "zone_put",
            {"id": "old-town", "name": "Old town", "geometry": OLD_TOWN, "rules": ["keep_locked", "no_parking"]},
        )
        assert put["status"] == "succeeded", put
        ZoneDocument.model_validate(put["data"])
        assert json.loads(probe.retained[f"{base}/fleet/zones/old-town"])["rules"] == ["keep_locked", "no_parking"]
        events_topic = f"{base}/fleet/zones/old-town/event"
        await probe.wait_for(lambda: probe.events(events_topic))
        assert [(e["type"], e["device"]) for e in probe.events(events_topic)] == [("entered", "z0")]
        assert probe.events(f"{base}/fleet/zones/station/event") == []

        # a device drives in, and out again
        adapter.locks["z1"].position = INSIDE
        await probe.wait_for(lambda: len(probe.events(events_topic)) == 2)
        adapter.locks["z1"].position = OUTSIDE
        await probe.wait_for(lambda: len(probe.events(events_topic)) == 3)
        seen = [ZoneEvent.model_validate(e) for e in probe.events(events_topic)]
        assert [(e.type, e.device) for e in seen] == [("entered", "z0"), ("entered", "z1"), ("left", "z1")]
        assert {e.vendor for e in seen} == {"fake"}
        listed = ZoneList.model_validate((await probe.request("zone_list"))["data"])
        assert listed.members == {"old-town": 1, "station": 3}

        # unlocked by its own command inside the zone: left alone
        adapter.locks["z3"].position = INSIDE
        await until("zone=old-town", ["z0", "z3"])
        assert (await bridge.set("z3", {"lock": "UNLOCKED"}))["status"] == "succeeded"
        await until("zone=old-town lock=UNLOCKED", ["z3"])
        # found UNLOCKED with no command behind it (a rider forced it): locked by the rule
        adapter.locks["z0"].locked = False
        await eventually(lambda: ("z0", "lock") in adapter.calls)  # the rule's command reached the vendor
        await until("zone=old-town lock=LOCKED", ["z0"])
        service.rules.sweep_once()
        assert service.rules.outstanding == {}
        assert adapter.locks["z3"].locked is False and adapter.calls.count(("z3", "lock")) == 0
        assert adapter.calls.count(("z0", "lock")) == 1

        service.store.flush()
        with sqlite3.connect(tmp_path / "f" / "fleet" / "fleet.sqlite") as db:
            journal = db.execute("SELECT entry, source, device, txn FROM journal WHERE entry LIKE 'rule.%'").fetchall()
        assert [(e, s, d) for e, s, d, _ in journal] == [
            ("rule.lock", "rule:keep_locked:old-town", "z0"),
            ("rule.outcome", "rule:keep_locked", "z0"),
        ]
        assert journal[0][3].startswith("fleet:rule:")
        twin = bridge.retained_json("z0", "twin")
        assert twin["command"]["transaction"] == journal[0][3] and twin["command"]["status"] == "succeeded"

        # a zone as a job target
        job = await probe.request(
            "job_create",
            {
                "target": {"query": "zone=station"},
                "operation": {"kind": "action", "action": "find", "arguments": {"volume": 3}},
            },
        )
        assert job["status"] == "succeeded", job
        done: dict[str, Any] = await probe.wait_job(job["data"]["id"], lambda d: d["status"] in FINAL_JOB)
        assert done["total"] == 2 and done["counts"]["SUCCEEDED"] == 2  # z1, z2 (z3 drove off)
        assert sorted(d for d, op in adapter.calls if op == "find") == ["z1", "z2"]

        # deleting a zone: its members leave, its retained document goes
        assert (await probe.request("zone_delete", {"zone_id": "old-town"}))["status"] == "succeeded"
        await probe.wait_for(lambda: probe.retained.get(f"{base}/fleet/zones/old-town") == b"")
        left = sorted(e["device"] for e in probe.events(events_topic)[4:] if e["type"] == "left")
        assert [e["type"] for e in probe.events(events_topic)] == ["entered"] * 2 + ["left", "entered"] + ["left"] * 2
        assert left == ["z0", "z3"]
        gone = await probe.request("query", {"q": "zone=old-town"})
        assert gone["status"] == "rejected" and "unknown zone" in gone["error"]["message"]
