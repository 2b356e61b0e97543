"""10,000 devices from a real bridge, in the console: time to first full render and the page's memory.

A bridge (the runtime, its SQLite store, the contract's retained topics) serves a fleet of 10,000
positioned scooters on a private anonymous mosquitto; once every state is retained, a person logs in
to a console on that broker. Measured, and written to ``console-10k.json`` next to the screenshots:

- login to full render: from the click on "Log in" until the table says 10,000 of 10,000 devices
  and the map has placed all of them (the session's connection receives 10,000 retained states, the
  page gets the snapshot and renders it);
- reload to full render (the session already holds the fleet);
- the JS heap (CDP ``Performance.getMetrics``), the DOM's size, the snapshot's bytes and the page weight.

Timings are reported, not asserted (this machine's speed varies); what is asserted is that all of it
arrives and that the page keeps only the visible rows in its DOM.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from playwright.async_api import expect
from pydantic import BaseModel

from tests.console.conftest import Stack
from twin.adapter import Adapter, CommandContext, DeviceInfo, ExecuteResult, ReportedPatch, lock_state
from twin.config import MqttSettings
from twin.console import ConsoleSettings, serve_console
from twin.homeassistant import HomeAssistantSettings
from twin.testing import BridgeHarness, MosquittoBroker

pytestmark = pytest.mark.anyio

DEVICES = 10_000


class CitySettings(BaseModel):
    devices: int = DEVICES


class CityFleet(Adapter[CitySettings]):
    """Scooters scattered over Berlin: a tenth unlocked, one in twenty offline, read once an hour."""

    vendor: ClassVar[str] = "city"
    settings_model = CitySettings

    def __init__(self, *, settings: CitySettings) -> None:
        super().__init__(settings=settings)
        rng = random.Random(21)
        self.ids = [f"scooter-{i:05d}" for i in range(settings.devices)]
        self.state = {
            d: {
                "lock": lock_state(locked=rng.random() > 0.1),
                "online": rng.random() > 0.05,
                "battery": rng.randint(5, 100),
                "latitude": 52.40 + rng.gauss(0, 0.05),
                "longitude": 13.40 + rng.gauss(0, 0.08),
            }
            for d in self.ids
        }

    async def list_devices(self) -> Sequence[DeviceInfo]:
        caps = frozenset({"lock", "battery", "location"})
        return [DeviceInfo(id=d, model="city scooter", capabilities=caps, poll_interval=3600.0) for d in self.ids]

    async def read_status(self, device_id: str) -> ReportedPatch:
        return ReportedPatch(values=dict(self.state[device_id]), observed_at=datetime.now(UTC))

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        return ExecuteResult()


async def test_ten_thousand_devices_render_and_what_it_costs(stack: Stack, tmp_path: Path) -> None:
    broker = MosquittoBroker()
    broker.start()
    try:
        harness = BridgeHarness(
            adapter=CityFleet(settings=CitySettings()),
            broker_url=broker.url,
            data_dir=tmp_path,
            base_topic="locktwin",
            homeassistant=HomeAssistantSettings(enabled=False),
        )
        async with harness as h:
            started = time.perf_counter()

            def states() -> int:
                return sum(1 for t in h.retained if t.endswith("/state") and "/bridge/" not in t)

            # state, twin and availability per device: a cheap test on every message before the count
            await h.wait_for(lambda: len(h.retained) >= 3 * DEVICES and states() == DEVICES, timeout=90)
            bridge_seconds = time.perf_counter() - started
            settings = ConsoleSettings(port=0, coalesce=0.25)
            mqtt = MqttSettings(url=broker.url)
            async with serve_console(settings=settings, mqtt=mqtt, base="locktwin") as (_, served):
                figures = await measure(stack, served.url)
        figures["bridge_first_reads_s"] = round(bridge_seconds, 2)
    finally:
        broker.stop()
    report = stack.shots.parent / "console-10k.json"
    report.write_text(json.dumps(figures, indent=2))
    print(f"\n10,000 devices in the console: {json.dumps(figures)}")


async def measure(stack: Stack, url: str) -> dict[str, float | int]:
    context = await stack.context()
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    await page.goto(f"{url}/login")
    await page.get_by_label("Username").fill("ops")  # an anonymous broker takes any username, no password
    clicked = time.perf_counter()
    await page.get_by_role("button", name="Log in").click()
    full = f"{DEVICES:,} of {DEVICES:,} devices"
    await expect(page.locator("#fleet-count")).to_have_text(full, timeout=60_000)
    await expect(page.locator("#map-summary")).to_contain_text(f"{full} have a position", timeout=60_000)
    login_s = time.perf_counter() - clicked
    weight = await page.evaluate(
        """() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
          .filter(e => !e.name.includes('/api/'))
          .reduce((t, e) => ({transfer: t.transfer + e.transferSize, decoded: t.decoded + e.decodedBodySize,
            files: t.files + 1}), {transfer: 0, decoded: 0, files: 0})"""
    )
    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    dom_nodes = await page.evaluate("document.getElementsByTagName('*').length")
    assert dom_nodes < 3000, dom_nodes  # only the visible rows and the clusters are in the DOM
    # the table scrolls to the last device
    await page.locator(".table-scroll").evaluate("el => { el.scrollTop = el.scrollHeight }")
    await expect(page.locator('#fleet-table tr[data-id="city/scooter-09999"]')).to_be_visible()
    await page.screenshot(path=str(stack.shots / "fleet-10k.png"))
    reloaded = time.perf_counter()
    await page.reload()
    await expect(page.locator("#fleet-count")).to_have_text(full, timeout=60_000)
    await expect(page.locator("#map-summary")).to_contain_text(f"{full} have a position", timeout=60_000)
    reload_s = time.perf_counter() - reloaded
    after = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    snapshot = 0
    async with (
        httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30) as client,
        client.stream("GET", "/api/stream") as response,
    ):
        async for chunk in response.aiter_bytes():
            snapshot += len(chunk)
            if b"\n\n" in chunk:
                break
    return {
        "login_to_full_render_s": round(login_s, 2),
        "reload_to_full_render_s": round(reload_s, 2),
        "js_heap_used_mb": round(metrics["JSHeapUsedSize"] / 1e6, 1),
        "js_heap_used_after_reload_mb": round(after["JSHeapUsedSize"] / 1e6, 1),
        "js_heap_total_mb": round(metrics["JSHeapTotalSize"] / 1e6, 1),
        "dom_nodes": dom_nodes,
        "snapshot_bytes": snapshot,
        "page_files": weight["files"],
        "page_transfer_bytes": weight["transfer"],
        "page_decoded_bytes": weight["decoded"],
    }
