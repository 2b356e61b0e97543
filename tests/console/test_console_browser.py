"""The console in a real Chromium against the demo's bridges on their simulators, over the shipped ACL.

Each test logs in through the login form in a fresh browser context (its own cookies). A negative
check (a refused unlock, a forged token) is followed by a permitted command on the same device: a
bridge handles one device's commands in order and the console sends a session's commands in order,
so once the later one is answered, an earlier one that had got through would have been seen.
"""

from __future__ import annotations

import contextlib
import json
import re

import aiomqtt
import anyio
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, expect

from tests.console.conftest import Stack

pytestmark = pytest.mark.anyio

DEVICE_LIST_WAIT = 15_000


async def shot(stack: Stack, page: Page, name: str, *, full: bool = False) -> None:
    await page.screenshot(path=str(stack.shots / f"{name}.png"), full_page=full)


def positioned(stack: Stack) -> set[str]:
    out = set()
    for vendor, harness in stack.bridges.items():
        for device in stack.devices[vendor]:
            state = harness.retained_json(device, "state") or {}
            if state.get("latitude") is not None and state.get("longitude") is not None:
                out.add(f"{vendor}/{device}")
    return out


async def open_device(page: Page, key: str) -> None:
    await page.evaluate("key => { location.hash = '#/device/' + key }", key)
    await expect(page.locator("#device-title")).to_contain_text(key.split("/", 1)[1])
    await expect(page.locator("#device-lock")).not_to_be_empty()


async def wait_lock(stack: Stack, key: str, lock: str) -> None:
    vendor, device = key.split("/", 1)
    await stack.bridges[vendor].wait_retained(device, "state", lambda s: s["lock"] == lock, timeout=20)


async def test_login_lists_every_device_of_the_demo(stack: Stack) -> None:
    page = await stack.login("operator")
    expected = {f"{v}/{d}" for v, ids in stack.devices.items() for d in ids}
    await expect(page.locator("#fleet-count")).to_have_text(f"{len(expected)} of {len(expected)} devices")
    rows = page.locator("#fleet-table tbody tr[data-id]")
    shown = set(await rows.evaluate_all("rows => rows.map(r => r.dataset.id)"))
    assert shown == expected
    for vendor in stack.devices:
        await expect(page.locator("#bridges")).to_contain_text(f"{vendor} online")
    await expect(page.locator("#who")).to_have_text("operator")
    await expect(page.locator("#nav-jobs")).to_be_hidden()  # nothing retained under locktwin/fleet/
    # the filters narrow it down, and sorting by battery puts the emptiest first
    await page.get_by_label("Vendor", exact=True).select_option("tuya")
    await expect(page.locator("#fleet-count")).to_have_text(f"3 of {len(expected)} devices")
    await page.get_by_label("Vendor", exact=True).select_option("")
    await page.get_by_role("button", name="Battery").click()
    await expect(page.locator("th.col-battery")).to_have_attribute("aria-sort", "ascending")
    await expect(page.locator("#fleet-table tbody tr[data-id]")).to_have_count(len(expected))
    batteries = await page.locator("#fleet-table td.col-battery").all_inner_texts()
    values = [float(re.sub(r"[^0-9.]", "", b)) for b in batteries if b.strip()]
    assert len(values) == len(expected) and values == sorted(values)
    await shot(stack, page, "fleet-desktop")
    phone = await stack.login("operator", context=await stack.context(phone=True))
    await shot(stack, phone, "fleet-phone")
    await phone.get_by_role("button", name="Map").click()
    await expect(phone.locator(".map-svg")).to_be_visible()
    await expect(phone.locator(".markers > g").first).to_be_visible()  # fitted to the pane once it is shown
    counts = await phone.locator(".markers > g").evaluate_all(
        "nodes => nodes.map(n => n.dataset.kind === 'marker' ? 1 : Number(n.dataset.count))"
    )
    assert sum(counts) == len(positioned(stack))
    await shot(stack, phone, "map-phone")
    assert page.errors == [] and phone.errors == []  # type: ignore[attr-defined]


async def test_wrong_password_is_refused_by_the_broker(stack: Stack) -> None:
    page = await (await stack.context()).new_page()
    await page.goto(f"{stack.url}/login")
    await page.get_by_label("Username").fill("operator")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Log in").click()
    # mosquitto 2.0 answers a wrong password with 0x87 Not authorized
    await expect(page.get_by_role("alert")).to_contain_text("refused the login: Not authorized (MQTT reason code 0x87)")
    cookies = {c["name"] for c in await page.context.cookies()}
    assert "locktwin_session" not in cookies


async def test_operator_locks_and_sees_locking_then_locked_without_a_reload(stack: Stack) -> None:
    key = f"okai/{stack.devices['okai'][0]}"
    page = await stack.login("operator")
    await open_device(page, key)
    await page.evaluate("window.notReloaded = true")
    await page.get_by_role("button", name="Unlock", exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text(f"Unlock {key}?")
    await dialog.get_by_role("button", name="Unlock").click()
    await expect(page.locator("#device-lock")).to_have_text("UNLOCKED", timeout=20_000)
    await page.evaluate(
        """() => {
        window.lockStates = [];
        const note = () => {
          const text = document.getElementById('device-lock')?.textContent;
          if (text && window.lockStates[window.lockStates.length - 1] !== text) window.lockStates.push(text);
        };
        new MutationObserver(note).observe(document.getElementById('device-status'),
          {subtree: true, childList: true, characterData: true});
        note();
      }"""
    )
    await page.get_by_role("button", name="Lock", exact=True).click()
    await expect(page.locator("#device-lock")).to_have_text("LOCKED", timeout=20_000)
    states = await page.evaluate("window.lockStates")
    assert states[0] == "UNLOCKED" and states[-1] == "LOCKED"
    assert "LOCKING" in states, states
    command = page.locator("#device-commands li.command").first
    await expect(command.locator(".command-head strong")).to_have_text("lock")
    await expect(command.locator(".step-accepted")).to_be_visible()
    await expect(command.locator(".step-succeeded")).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True
    await shot(stack, page, "device-after-lock", full=True)


async def test_a_bridges_error_is_shown_with_its_normalized_code(stack: Stack) -> None:
    page = await stack.login("operator")
    await page.evaluate("location.hash = '#/device/okai/not-a-scooter'")
    await expect(page.locator("#device-status")).to_contain_text("not in any bridge's device list")
    await page.get_by_role("button", name="Refresh from vendor").click()
    command = page.locator("#device-commands li.command").first
    await expect(command.locator(".step-rejected")).to_contain_text("UNKNOWN_DEVICE")
    await expect(page.locator("#toasts")).to_contain_text("refresh: rejected: UNKNOWN_DEVICE")


async def test_dashboard_unlock_is_shown_refused_and_never_reaches_the_vendor(stack: Stack) -> None:
    vendor, device = "okai", stack.devices["okai"][1]
    key = f"{vendor}/{device}"
    page = await stack.login("dashboard")
    await open_device(page, key)
    before = list(stack.calls[vendor].calls)
    await page.get_by_role("button", name="Unlock", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="Unlock").click()
    refused = page.locator("#device-commands li.command").first
    await expect(refused).to_contain_text("Refused by the broker: Not authorized (MQTT reason code 0x87)")
    await expect(page.locator("#toasts")).to_contain_text("Refused by the broker")
    await shot(stack, page, "dashboard-refused")
    # the barrier: a permitted command on the same device, after the refused one
    operator = await stack.login("operator")
    await open_device(operator, key)
    await operator.get_by_role("button", name="Refresh from vendor").click()
    await expect(operator.locator("#device-commands li.command").first.locator(".step-succeeded")).to_be_visible()
    lock_calls = [c for c in stack.calls[vendor].calls[len(before) :] if c[1].endswith("switchLock")]
    assert lock_calls == []
    assert stack.bridges[vendor].retained_json(device, "state")["lock"] == "LOCKED"
    refused_txn = await refused.get_attribute("data-transaction")
    assert refused_txn and refused_txn.startswith("console.dashboard.")
    assert not any(refused_txn.encode() in payload for _, payload, _, _ in stack.bridges[vendor].messages)


async def test_map_shows_one_marker_per_positioned_device_and_opens_it(stack: Stack) -> None:
    page = await stack.login("operator")
    wanted = positioned(stack)
    assert len(wanted) >= 6  # scooters, e-bikes and cars have positions; the door locks have none
    await expect(page.locator("#map-summary")).to_contain_text(f"{len(wanted)} of 12 devices have a position")
    counts = await page.locator(".markers > g").evaluate_all(
        "nodes => nodes.map(n => n.dataset.kind === 'marker' ? 1 : Number(n.dataset.count))"
    )
    assert sum(counts) == len(wanted)
    # zoom into the cars' cluster (California) until every car has a marker of its own, then open one
    cars = {k for k in wanted if k.startswith("smartcar/")}
    markers: set[str] = set()
    for _ in range(6):
        shown = page.locator(".markers > g[data-kind=marker]")
        markers = set(await shown.evaluate_all("ns => ns.map(n => n.dataset.id)"))
        if cars <= markers:
            break
        # at the world's scale the cars (California) are one cluster of 3, the scooters and e-bikes another
        three = page.locator("title", has_text=re.compile(r"^3 devices"))
        cluster = page.locator(".markers > g[data-kind=cluster]", has=three)
        await cluster.first.click()
        await page.wait_for_function("() => new Promise(r => requestAnimationFrame(() => r(true)))")
    assert cars <= markers, markers
    await shot(stack, page, "map-zoomed")
    car = sorted(cars)[0]
    await page.locator(f'.markers > g[data-id="{car}"]').click()
    await expect(page).to_have_url(re.compile(re.escape("#/device/" + car)))
    await expect(page.locator("#device-title")).to_contain_text(car.split("/", 1)[1])
    # the keyboard reaches a marker too
    await page.go_back()
    marker = page.locator(f'.markers > g[data-id="{car}"]')
    await marker.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#device-title")).to_contain_text(car.split("/", 1)[1])
    # three scooters at the very same spot stay one cluster at any zoom: it lists them instead
    await page.go_back()
    await page.get_by_label("Vendor", exact=True).select_option("okai")
    await expect(page.locator("#map-summary")).to_contain_text("3 of 3 devices have a position: 0 markers, 1 clusters")
    await page.locator(".markers > g[data-kind=cluster]").click()
    popover = page.get_by_role("dialog", name="Devices here")
    await expect(popover).to_contain_text("3 devices here")
    assert await popover.get_by_role("link").count() == 3


async def test_device_page_shows_its_twin_and_last_command(stack: Stack) -> None:
    vendor, device = "segway", stack.devices["segway"][0]
    key = f"{vendor}/{device}"
    page = await stack.login("operator")
    await open_device(page, key)
    lock_row = page.locator('#device-twin tr[data-field="lock"]')
    await expect(lock_row).to_contain_text("LOCKED")
    await expect(lock_row.locator("td").nth(5)).to_have_text(re.compile(r"poll|push|command|get|start"))
    # a vendor action from its generated form
    action = page.locator('details[data-action="set_upload_interval"]')
    await action.locator("summary").click()
    location, status = action.locator('fieldset[data-name="location"]'), action.locator('fieldset[data-name="status"]')
    await location.get_by_label("Unlocked").fill("30")
    await action.get_by_role("button", name="Run set_upload_interval").click()
    await expect(action.get_by_role("alert")).to_contain_text("Locked")  # a required field is empty: nothing sent
    for group, name, value in ((location, "Locked", "120"), (status, "Riding", "30"), (status, "Not Riding", "60")):
        await group.get_by_label(re.compile(f"^{name}")).fill(value)
    await status.get_by_label(re.compile("^Locked")).fill("300")
    await action.get_by_role("button", name="Run set_upload_interval").click()
    command = page.locator("#device-commands li.command").first
    await expect(command).to_contain_text("set_upload_interval")
    await expect(command.locator(".step-succeeded")).to_be_visible(timeout=20_000)
    current = page.locator("#current-command")
    await expect(current).to_contain_text("set_upload_interval")
    await expect(current).to_contain_text("succeeded")
    await expect(page.locator("#device-history-list")).to_contain_text("set_upload_interval")
    twin = stack.bridges[vendor].retained_json(device, "twin")
    assert twin["command"]["name"] == "set_upload_interval"
    await shot(stack, page, "device-segway", full=True)
    # Tuya: masked cards and lock users, which an operator may load
    tuya = f"tuya/{stack.devices['tuya'][0]}"
    await open_device(page, tuya)
    await expect(page.get_by_role("heading", name="Cards")).to_be_visible()
    await page.get_by_role("button", name="Load lock users").click()
    await expect(page.locator("#users-table, #h-users ~ div .empty").first).to_be_visible(timeout=20_000)
    await shot(stack, page, "device-tuya", full=True)
    phone = await stack.login("operator", context=await stack.context(phone=True))
    await open_device(phone, key)
    await expect(phone.locator("#current-command")).to_contain_text("set_upload_interval")
    await shot(stack, phone, "device-phone", full=True)
    assert page.errors == [] and phone.errors == []  # type: ignore[attr-defined]


async def test_expired_session_is_refused_and_sends_the_page_to_login(stack: Stack) -> None:
    key = f"okai/{stack.devices['okai'][2]}"
    page = await stack.login("operator")
    await open_device(page, key)
    stack.clock.offset += 3600 + 1  # past session_max
    try:
        answer = await page.evaluate(
            """async key => {
            const r = await fetch('/api/devices/' + key + '/set', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: JSON.stringify({lock: 'LOCKED'})});
            return {status: r.status, body: await r.json()};
          }""",
            key,
        )
        assert answer["status"] == 401
        assert answer["body"]["error"]["code"] == "SESSION_EXPIRED"
        # The page's own event stream may find the session gone first and leave for the login page
        # while the click is under way (a full run here once timed out clicking a page in flight):
        # either way the page must end on the login page.
        with contextlib.suppress(PlaywrightError):
            await page.get_by_role("button", name="Lock", exact=True).click(timeout=5000)
        await expect(page).to_have_url(re.compile(r"/login$"))
        await page.goto(f"{stack.url}/")
        await expect(page).to_have_url(re.compile(r"/login$"))
    finally:
        stack.clock.offset = 0.0


async def test_forged_or_missing_csrf_token_is_refused(stack: Stack) -> None:
    vendor, device = "segway", stack.devices["segway"][1]
    key = f"{vendor}/{device}"
    page = await stack.login("operator")
    await open_device(page, key)
    sets = f"locktwin/{key}/set"
    async with aiomqtt.Client(
        "127.0.0.1",
        stack.broker.port,
        username="bridge-segway",
        password=stack.broker.passwords["bridge-segway"],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as observer:
        await observer.subscribe(sets, qos=1)
        for headers in ({"X-CSRF-Token": "forged"}, {}):
            answer = await page.evaluate(
                """async ([key, headers]) => {
                const r = await fetch('/api/devices/' + key + '/set', {method: 'POST',
                  headers: {'Content-Type': 'application/json', ...headers}, body: JSON.stringify({lock: 'UNLOCKED'})});
                return {status: r.status, body: await r.json()};
              }""",
                [key, headers],
            )
            assert answer["status"] == 403
            assert answer["body"]["error"]["code"] == "CSRF"
        await page.get_by_role("button", name="Lock", exact=True).click()  # with the page's own token
        with anyio.fail_after(15):
            message = await anext(observer.messages)
        body = json.loads(message.payload)  # type: ignore[arg-type]
        assert body["lock"] == "LOCKED"  # the first command to arrive is the permitted one
        assert body["transaction"].startswith("console.operator.")
        assert body["expires_in"] == 30.0 and "issued_at" in body
        # the broker forwards what is left of the expiry: a command it held too long it drops unread
        assert 0 < message.properties.MessageExpiryInterval <= 30  # type: ignore[union-attr]
