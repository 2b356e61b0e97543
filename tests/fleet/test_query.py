"""Queries over the live index, across two vendors (OKAI and Segway on their simulators, Segway in
two shards), by MQTT request, over HTTP and with ``locktwin fleet query``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bridges.okai.adapter import OkaiAdapter
from bridges.segway.adapter import SegwayAdapter
from contracts.fleet import QueryResult
from twin.shard import Shard

from .helpers import cli, eventually, running_fleet, served_simulator, simulator_bridge

pytestmark = pytest.mark.anyio


async def test_query_across_two_vendors_and_shards(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fq-{uuid.uuid4().hex[:8]}"
    async with (
        served_simulator(OkaiAdapter, devices=3) as (okai_kit, okai_url),
        served_simulator(SegwayAdapter, devices=4) as (seg_kit, seg_url),
        simulator_bridge(OkaiAdapter, okai_kit, okai_url, mqtt_broker, tmp_path / "okai", base) as okai,
        simulator_bridge(SegwayAdapter, seg_kit, seg_url, mqtt_broker, tmp_path / "seg", base, shard=Shard(0, 2)),
        simulator_bridge(SegwayAdapter, seg_kit, seg_url, mqtt_broker, tmp_path / "seg", base, shard=Shard(1, 2)),
        running_fleet(mqtt_broker, tmp_path / "fleet", base) as (service, probe),
    ):
        everyone = [f"okai/{d}" for d in okai_kit.device_ids] + [f"segway/{d}" for d in seg_kit.device_ids]

        async def query(q: str, **extra: object) -> dict[str, object]:
            answer = await probe.request("query", {"q": q, **extra})
            assert answer["status"] == "succeeded", answer
            QueryResult.model_validate(answer["data"])
            data: dict[str, object] = answer["data"]
            return data

        async def total(q: str) -> object:
            return (await query(q))["total"]

        # every device polled: a battery and a known lock state
        await eventually(lambda: _is(total("battery>=0 lock=LOCKED"), len(everyone)), timeout=20)
        result = await query("vendor=okai,segway", limit=4)
        assert result["total"] == 7
        first = [f"{r['vendor']}/{r['device']}" for r in result["rows"]]  # type: ignore[index, union-attr]
        rest = await query("vendor=okai,segway", limit=4, cursor=result["next_cursor"])
        second = [f"{r['vendor']}/{r['device']}" for r in rest["rows"]]  # type: ignore[index, union-attr]
        assert first + second == sorted(everyone) and rest["next_cursor"] is None
        assert (await query("vendor=segway"))["total"] == 4  # both shards' devices
        assert service.index.unlisted == set()

        # an unlock through OKAI's bridge shows in the index; the filter combines the terms
        target = okai_kit.device_ids[0]
        assert (await okai.set(target, {"lock": "UNLOCKED"}))["status"] == "succeeded"
        await eventually(lambda: _is(total("lock=UNLOCKED"), 1))
        unlocked = await query("vendor=okai lock=UNLOCKED battery>0 pending=false")
        assert [r["device"] for r in unlocked["rows"]] == [target]  # type: ignore[index, union-attr]
        assert (await query(f"id={target[:10]}* lock!=UNLOCKED"))["total"] == 2
        by_battery = await query("", sort="-battery")
        batteries = [r["battery"] for r in by_battery["rows"]]  # type: ignore[index, union-attr]
        assert batteries == sorted(batteries, reverse=True)

        # a bad filter: rejected, naming the position of the mistake
        bad = await probe.request("query", {"q": "vendor=okai battery<<20"})
        assert bad["status"] == "rejected" and bad["error"]["code"] == "INVALID_PAYLOAD"
        assert bad["data"]["position"] == 21 and "position 21" in bad["error"]["message"]
        typo = await probe.request("query", {"q": "vendor=okai batery<20"})
        assert typo["data"]["position"] == 13 and "unknown field 'batery'" in typo["error"]["message"]

        # the same over HTTP
        assert service.http_url is not None
        async with httpx.AsyncClient(base_url=service.http_url) as http:
            page = (await http.get("/query", params={"q": "vendor=segway", "limit": 2})).json()
            assert page["total"] == 4 and len(page["rows"]) == 2
            refused = await http.get("/query", params={"q": "zone=nowhere"})
            assert refused.status_code == 400 and refused.json()["position"] == 6

        # and on the command line
        done = await anyio.to_thread.run_sync(
            lambda: cli(mqtt_broker, base, "query", "vendor=okai lock=LOCKED", "--json")
        )
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(r["device"] for r in rows) == sorted(okai_kit.device_ids[1:])
        wrong = await anyio.to_thread.run_sync(lambda: cli(mqtt_broker, base, "query", "lock=OPEN"))
        assert wrong.returncode == 3 and "^" in wrong.stderr and "'lock' takes one of" in wrong.stderr


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)
