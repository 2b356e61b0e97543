"""Jobs and zones: shown only once something is retained under locktwin/fleet/, read exactly as the fleet
service's contract has them (JobDocument, ZoneDocument), and a job canceled with fleet/request/job_cancel.

Until the fleet service lands, the test plays it: as ``bridge`` (which may write locktwin/#) it retains
the documents and answers job_cancel on the request's MQTT v5 Response Topic, with the bridges'
Response envelope.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import anyio
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from playwright.async_api import expect

from tests.console.conftest import Stack

pytestmark = pytest.mark.anyio

JOB: dict[str, Any] = {
    "id": "job-night-lock",
    "name": "night lock old town",
    "status": "IN_PROGRESS",
    "paused": False,
    "operation": {"kind": "set", "field": "lock", "value": "LOCKED"},
    "target": {"query": "vendor=okai lock=UNLOCKED", "devices": 200},
    "rollout": {"max_per_second": 5.0, "max_in_flight": 50},
    "abort": {"failure_percent": 10.0, "min_executions": 20},
    "execution_timeout": 60.0,
    "schedule": None,
    "total": 200,
    "counts": {
        "QUEUED": 0,
        "IN_PROGRESS": 3,
        "SUCCEEDED": 150,
        "FAILED": 2,
        "TIMED_OUT": 0,
        "REJECTED": 0,
        "CANCELED": 0,
        "SKIPPED": 5,
    },
    "rate": 4.9,
    "estimated_end": "2026-12-07T23:10:00+01:00",
    "created_at": "2026-12-07T22:59:00+01:00",
    "started_at": "2026-12-07T23:00:00+01:00",
    "ended_at": None,
    "updated_at": "2026-12-07T23:02:00+01:00",
}
OLD_TOWN = {
    "id": "zone-old-town",
    "name": "old town",
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[4.86, 52.36], [4.91, 52.36], [4.91, 52.38], [4.86, 52.38], [4.86, 52.36]]],
    },
    "rules": ["keep_locked"],
}
DEPOT = {
    "id": "zone-depot",
    "name": "depot",
    "geometry": {"type": "Point", "coordinates": [4.85, 52.34], "radius_m": 300},
    "rules": [],
}
RETAINED = ("locktwin/fleet/state", f"locktwin/fleet/jobs/{JOB['id']}", "locktwin/fleet/zones/zone-old-town")


@asynccontextmanager
async def fleet_service(stack: Stack) -> AsyncIterator[aiomqtt.Client]:
    """A stand-in fleet service: retains the documents, answers job_cancel, and clears it all on exit."""
    async with aiomqtt.Client(
        "127.0.0.1",
        stack.broker.port,
        username="fleet",  # the fleet service's own role
        password=stack.broker.passwords["fleet"],
        protocol=aiomqtt.ProtocolVersion.V5,
        identifier="test-fleet-service",
    ) as client:
        await client.subscribe("locktwin/fleet/request/job_cancel", qos=1)
        try:
            await client.publish("locktwin/fleet/state", b"online", qos=1, retain=True)
            await client.publish(RETAINED[1], json.dumps(JOB), qos=1, retain=True)
            await client.publish(RETAINED[2], json.dumps(OLD_TOWN), qos=1, retain=True)
            await client.publish("locktwin/fleet/zones/zone-depot", json.dumps(DEPOT), qos=1, retain=True)
            yield client
        finally:
            for topic in (*RETAINED, "locktwin/fleet/zones/zone-depot"):
                await client.publish(topic, b"", qos=1, retain=True)  # an empty retained message deletes


async def test_jobs_and_zones_show_once_the_fleet_service_retains_them_and_a_job_cancels(stack: Stack) -> None:
    page = await stack.login("operator")
    await expect(page.locator("#nav-jobs")).to_be_hidden()
    assert await page.locator(".zones > g").count() == 0
    async with fleet_service(stack) as service:
        await expect(page.locator("#nav-jobs")).to_be_visible()
        await expect(page.locator("#jobs-count")).to_have_text("1")
        await expect(page.locator('.zones > g[data-zone="zone-old-town"] path')).to_have_count(1)
        await expect(page.locator('.zones > g[data-zone="zone-depot"] circle')).to_have_count(1)
        await page.get_by_label("Vendor", exact=True).select_option("okai")  # the scooters are in the old town
        await page.screenshot(path=str(stack.shots / "map-zones.png"))
        await page.get_by_role("link", name="Jobs").click()
        job = page.locator(f'li[data-job="{JOB["id"]}"]')
        await expect(job).to_contain_text("night lock old town")
        await expect(job).to_contain_text("IN_PROGRESS")
        await expect(job).to_contain_text("set lock LOCKED · vendor=okai lock=UNLOCKED · 200 devices")
        await expect(job).to_contain_text("157 of 200 done (79 %)")  # succeeded, failed and skipped are done
        progress = job.get_by_role("progressbar", name="night lock old town")
        assert (await progress.get_attribute("value"), await progress.get_attribute("max")) == ("157", "200")
        await page.screenshot(path=str(stack.shots / "jobs.png"))

        async def answer_cancel() -> dict[str, Any]:
            message = await anext(service.messages)
            request = json.loads(message.payload)  # type: ignore[arg-type]
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]
            reply = {"transaction": request["transaction"], "command_id": None, "status": "succeeded", "data": {}}
            await service.publish(message.properties.ResponseTopic, json.dumps(reply), qos=1, properties=props)  # type: ignore[union-attr]
            canceled = copy.deepcopy(JOB) | {"status": "CANCELED", "ended_at": "2026-12-07T23:03:00+01:00"}
            await service.publish(RETAINED[1], json.dumps(canceled), qos=1, retain=True)
            return request

        async with anyio.create_task_group() as tg:
            requests: list[dict[str, Any]] = []

            async def serve() -> None:
                requests.append(await answer_cancel())

            tg.start_soon(serve)
            await job.get_by_role("button", name="Cancel job night lock old town").click()
            dialog = page.get_by_role("dialog")
            await expect(dialog).to_contain_text("Cancel job night lock old town?")
            await dialog.get_by_role("button", name="Cancel job").click()
            await expect(job.locator(".cancel-outcome")).to_contain_text("cancel: succeeded")
        assert requests[0]["job_id"] == JOB["id"]
        assert requests[0]["transaction"].startswith("console.operator.")
        await expect(job).to_contain_text("CANCELED")
        await expect(job.get_by_role("button", name="Cancel job night lock old town")).to_have_count(0)
        await expect(page.locator("#jobs-count")).to_have_text("")
        # a dashboard may look but not cancel: the broker refuses its request
        await service.publish(RETAINED[1], json.dumps(JOB), qos=1, retain=True)
        viewer = await stack.login("dashboard")
        await viewer.get_by_role("link", name="Jobs").click()
        viewer_job = viewer.locator(f'li[data-job="{JOB["id"]}"]')
        await viewer_job.get_by_role("button", name="Cancel job night lock old town").click()
        await viewer.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
        await expect(viewer_job.locator(".cancel-outcome")).to_contain_text(
            "Refused by the broker: Not authorized (MQTT reason code 0x87)"
        )
    await expect(page.locator("#nav-jobs")).to_be_hidden()  # nothing retained under locktwin/fleet/ any more
    await expect(page.locator(".zones > g")).to_have_count(0)
