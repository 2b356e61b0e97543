"""The console's browser tests run against the real thing, started once for the package.

A private mosquitto with the shipped configuration, ACL and a password file (``acl_broker`` of the ACL
test), every registered vendor's simulator (``Adapter.simulator(devices=3)``, as the demo starts them)
served over real HTTP with a recorder of the calls each receives, one bridge per vendor as its own ``bridge-<vendor>``,
the console on a real socket with an injected clock, and Debian's Chromium driven by Playwright
(``executable_path``: Playwright never downloads a browser here).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_broker_acl import MOSQUITTO, Broker, acl_broker
from twin.asgi import serve_asgi
from twin.config import MqttSettings, load_vendor_settings
from twin.console import ConsoleSettings, serve_console
from twin.registry import ADAPTERS, load_adapter_class
from twin.testing import BridgeHarness

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
#: without these Chromium stalls on a machine with no network (component updates, sync, first run)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-precise-memory-info",
]

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None

_needed = (("chromium", CHROMIUM), ("mosquitto", MOSQUITTO), ("playwright", async_playwright))
_missing = [name for name, found in _needed if not found]
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"the console's browser tests need {', '.join(_missing)}: scripts/bootstrap --with-chromium")

collect_ignore_glob = ["test_*.py"] if _missing else []


class TestClock:
    """The console's clock: real monotonic time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class CallRecorder:
    """ASGI middleware in front of a simulator: every request it receives, as (method, path)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class Stack:
    broker: Broker
    url: str
    clock: TestClock
    browser: Browser
    shots: Path
    devices: dict[str, list[str]] = field(default_factory=dict)
    calls: dict[str, CallRecorder] = field(default_factory=dict)
    bridges: dict[str, BridgeHarness] = field(default_factory=dict)
    contexts: list[BrowserContext] = field(default_factory=list)

    async def context(self, *, phone: bool = False) -> BrowserContext:
        if phone:
            made = await self.browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
            )
        else:
            made = await self.browser.new_context(viewport={"width": 1400, "height": 900})
        made.set_default_timeout(15_000)
        self.contexts.append(made)
        return made

    async def close_contexts(self) -> None:
        while self.contexts:
            await self.contexts.pop().close()

    async def login(self, user: str, *, context: BrowserContext | None = None) -> Page:
        """A logged-in page on the fleet view, its first snapshot rendered."""
        page = await (context or await self.context()).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        await page.goto(f"{self.url}/login")
        await page.get_by_label("Username").fill(user)
        await page.get_by_label("Password").fill(self.broker.passwords[user])
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_selector("body[data-ready]")
        await page.wait_for_function("document.getElementById('fleet-count').textContent.includes(' of ')")
        return page


@pytest.fixture(scope="package")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
async def _close_pages(stack: Stack) -> AsyncIterator[None]:
    yield
    await stack.close_contexts()


@pytest.fixture(scope="package")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    assert async_playwright is not None and CHROMIUM is not None
    data = tmp_path_factory.mktemp("console-stack")
    clock = TestClock()
    with acl_broker() as broker:
        async with AsyncExitStack() as exits:
            settings = ConsoleSettings(port=0, coalesce=0.1, session_max=3600, session_idle=900)
            _, served = await exits.enter_async_context(
                serve_console(settings=settings, mqtt=MqttSettings(url=broker.url), base="locktwin", clock=clock)
            )
            playwright = await exits.enter_async_context(async_playwright())
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            exits.push_async_callback(browser.close)
            result = Stack(broker=broker, url=served.url, clock=clock, browser=browser, shots=data / "screenshots")
            result.shots.mkdir()
            for vendor in sorted(ADAPTERS):
                cls = load_adapter_class(vendor)
                kit = cls.simulator(devices=3)
                assert kit is not None, vendor
                recorder = CallRecorder(kit.app)
                sim = await exits.enter_async_context(serve_asgi(recorder))
                adapter = cls(settings=load_vendor_settings(cls.settings_model, kit.settings(sim.url)))
                harness = BridgeHarness(
                    adapter=adapter,
                    broker_url=broker.url,
                    data_dir=data / vendor,
                    base_topic="locktwin",
                    username=f"bridge-{vendor}",
                    password=broker.passwords[f"bridge-{vendor}"],
                )
                result.bridges[vendor] = await exits.enter_async_context(harness)
                result.devices[vendor] = list(kit.device_ids)
                result.calls[vendor] = recorder
            for vendor, harness in result.bridges.items():  # every device's first read is in
                for device in result.devices[vendor]:
                    await harness.wait_retained(device, "state", lambda s: s.get("battery") is not None, timeout=30)
            print(f"\nconsole screenshots in {result.shots}")
            yield result
            if keep := os.environ.get("LOCKTWIN_CONSOLE_SHOTS"):  # pytest prunes old tmp folders: keep them
                shutil.copytree(result.shots, keep, dirs_exist_ok=True)
