"""The console without a browser: its view of the fleet under bad input, sessions on an injected clock,
and its HTTP surface (headers, cookies, CSRF, login, logout) over a real socket and a real mosquitto.

The browser tests are in tests/console/ (Debian's Chromium); these need neither Chromium nor the ACL.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiomqtt
import httpx
import pytest
from pydantic import ValidationError

import twin.console
from twin.config import MqttSettings, load_settings
from twin.console import ConsoleSettings, serve_console
from twin.console.fleet import FleetView, Listener
from twin.console.sessions import LoginThrottle, SessionStore
from twin.console.web import content_security_policy

BASE = "lt-console"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_public_surface() -> None:
    assert sorted(twin.console.__all__) == [
        "Console",
        "ConsoleSettings",
        "LoginFailed",
        "add_console_command",
        "serve_console",
    ]
    for name in twin.console.__all__:
        assert getattr(twin.console, name) is not None


# -- the view of the fleet ------------------------------------------------------------------------------


def state(**values: Any) -> bytes:
    return json.dumps({"lock": "LOCKED", "online": True, "updated_at": "2026-12-06T10:00:00+00:00", **values}).encode()


GARBAGE = [b"", b"\xff\xfe", b"null", b"[]", b"42", b'"x"', b"{", b'{"lock": 5, "battery": "full", "latitude": 1e999}']
TOPICS = [
    "a/d1/state",
    "a/d1/twin",
    "a/d1/event",
    "bridge/a/state",
    "bridge/a/devices",
    "bridge/a/devices/x",
    "bridge/a/devices/1",
    "bridge/a/actions",
    "bridge/a/shards/0-of-2/devices",
    "bridge/a",
    "fleet/state",
    "fleet/jobs/j1",
    "fleet/zones/z1",
    "fleet/jobs",
    "a/d1/state/extra",
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_view_survives_any_payload_on_any_topic(payload: bytes) -> None:
    view = FleetView(base=BASE)
    for topic in TOPICS:
        view.receive(f"{BASE}/{topic}", payload)
    assert view.answer(payload) is False
    assert all(
        r["lock"] in {"LOCKED", "UNLOCKED", "LOCKING", "UNLOCKING", "JAMMED", "UNKNOWN"} for r in view.all_rows()
    )
    assert view.jobs == {} and view.zones == {}


def test_view_merges_states_with_the_device_lists_of_every_shard() -> None:
    view = FleetView(base=BASE)
    listener = Listener()
    view.listeners.add(listener)
    entry = {"id": "d1", "name": "Front door", "model": "X", "capabilities": ["lock"], "actions": ["find"]}
    view.receive(f"{BASE}/bridge/a/shards/1-of-2/devices", json.dumps({"vendor": "a", "devices": [entry]}).encode())
    view.receive(f"{BASE}/a/d1/state", state(battery=55.5, latitude=52.1, longitude=13.2, lock="JAMMED"))
    view.receive(f"{BASE}/a/d2/state", state(latitude=52.1))  # half a position is no position
    rows = {r["id"]: r for r in view.all_rows()}
    assert (rows["a/d1"]["name"], rows["a/d1"]["shard"], rows["a/d1"]["lock"], rows["a/d1"]["battery"]) == (
        "Front door",
        "1-of-2",
        "JAMMED",
        55.5,
    )
    assert rows["a/d2"]["latitude"] is None and rows["a/d2"]["name"] is None
    assert listener.rows == {"a/d1", "a/d2"} and listener.wake.is_set()
    # the list drops d1: its row stays (it still has a state) without the list's fields
    view.receive(f"{BASE}/bridge/a/shards/1-of-2/devices", json.dumps({"vendor": "a", "devices": []}).encode())
    assert view.row("a/d1")["name"] is None  # type: ignore[index]
    view.receive(f"{BASE}/a/d1/state", b"")  # an empty retained state: the device is gone
    assert view.row("a/d1") is None


def test_view_keeps_jobs_and_zones_while_retained_and_events_bounded() -> None:
    view = FleetView(base=BASE)
    assert not view.fleet_present()
    view.receive(f"{BASE}/fleet/jobs/j1", json.dumps({"id": "j1", "status": "IN_PROGRESS"}).encode())
    assert view.fleet_present() and set(view.jobs) == {"j1"}
    view.receive(f"{BASE}/fleet/jobs/j1", b"")
    assert not view.fleet_present()
    for n in range(50):
        view.receive(f"{BASE}/a/d1/event", json.dumps({"type": "command", "at": "x", "data": {"n": n}}).encode())
    assert [e["data"]["n"] for e in view.events["a/d1"]] == list(range(30, 50))


def test_view_matches_answers_to_this_sessions_commands_only() -> None:
    view = FleetView(base=BASE)
    view.commands.add({"transaction": "console.u.1", "target": "a/d1", "status": "published", "answers": []})
    other = json.dumps({"transaction": "cli-9", "status": "succeeded"}).encode()
    assert view.answer(other) is False
    accepted = json.dumps({"transaction": "console.u.1", "status": "accepted", "command_id": "c"}).encode()
    assert view.answer(accepted) is True
    no_transaction = json.dumps({"transaction": None, "status": "failed", "error": {"code": "DEVICE_OFFLINE"}}).encode()
    assert view.answer(no_transaction, correlation=b"console.u.1") is True  # v5 correlation data
    entry = view.commands.get("console.u.1")
    assert entry is not None and [a["status"] for a in entry["answers"]] == ["accepted", "failed"]
    assert entry["answers"][1]["error"] == {"code": "DEVICE_OFFLINE"}


# -- sessions -----------------------------------------------------------------------------------------


def test_session_ends_after_idle_unless_a_page_is_open_and_always_at_max_age() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, idle=60, max_age=600, limit=2)
    session = store.new(username="u", password=None)
    clock.now += 59
    assert store.get(session.id) is session  # seen: the idle time starts again
    clock.now += 61
    assert store.get(session.id) is None
    kept = store.new(username="u", password=None)
    kept.streams = 1
    clock.now += 500
    assert store.get(kept.id) is kept  # an open page keeps it
    clock.now += 100
    assert store.get(kept.id) is None  # but not past the maximum age
    assert {s.id for s in store.sweep()} == {session.id, kept.id} and len(store) == 0
    assert kept.password is None


def test_login_throttle_locks_one_username_from_one_address_for_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, failures=3, window=300)
    for _ in range(3):
        assert throttle.locked("op", "10.0.0.1") == 0
        throttle.failed("op", "10.0.0.1")
    assert throttle.locked("op", "10.0.0.1") == 300
    assert throttle.locked("op", "10.0.0.2") == 0 and throttle.locked("other", "10.0.0.1") == 0
    clock.now += 301
    assert throttle.locked("op", "10.0.0.1") == 0


def test_settings_refuse_a_tile_url_that_is_not_an_xyz_template() -> None:
    with pytest.raises(ValidationError):
        ConsoleSettings(tile_url="https://tiles.example/{z}/{x}.png")
    with pytest.raises(ValidationError):
        ConsoleSettings(tile_url="javascript:alert(1)//{z}{x}{y}")
    tiles = ConsoleSettings(tile_url="https://tiles.example/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://tiles.example;" in content_security_policy(tiles.tile_origin)
    assert load_settings(console={"port": 9000}).console.port == 9000


def test_shipped_pages_have_no_inline_script_or_style_and_no_remote_assets() -> None:
    package = resources.files("twin.console")
    for folder in ("templates", "static"):
        for item in package.joinpath(folder).iterdir():
            text = item.read_text(encoding="utf-8")
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), item.name
            assert " style=" not in text and "<style" not in text, item.name
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), item.name
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, item.name


# -- HTTP -------------------------------------------------------------------------------------------


@pytest.fixture
async def console(mqtt_broker: str) -> AsyncIterator[str]:
    settings = ConsoleSettings(port=0, login_hint="any username")
    async with serve_console(settings=settings, mqtt=MqttSettings(url=mqtt_broker), base=BASE) as (_, served):
        yield served.url


async def login(client: httpx.AsyncClient, username: str = "alice") -> httpx.Response:
    form = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return await client.post("/login", data={"username": username, "password": "", "csrf": token.group(1)})


@pytest.mark.anyio
async def test_every_response_carries_the_security_headers(console: str) -> None:
    async with httpx.AsyncClient(base_url=console) as client:
        for path in ("/login", "/static/app.js", "/api/session", "/nope"):
            response = await client.get(path)
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
        assert (await client.get("/api/session")).status_code == 401
        assert (await client.get("/", follow_redirects=False)).headers["location"] == "/login"


@pytest.mark.anyio
async def test_login_sets_a_strict_http_only_cookie_and_the_password_never_reaches_the_page(
    console: str, mqtt_broker: str
) -> None:
    async with httpx.AsyncClient(base_url=console) as client:
        response = await login(client)
        assert response.status_code == 303
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "locktwin_session" in v)
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
        session = (await client.get("/api/session")).json()
        assert session["user"] == "alice" and len(session["csrf"]) >= 32 and "password" not in json.dumps(session)
        index = await client.get("/")
        assert index.status_code == 200 and 'src="/static/app.js"' in index.text


@pytest.mark.anyio
async def test_login_without_its_form_token_is_refused(console: str) -> None:
    async with httpx.AsyncClient(base_url=console) as client:
        response = await client.post("/login", data={"username": "alice", "password": "", "csrf": "made-up"})
        assert response.status_code == 403 and "login form expired" in response.text
        bad_name = await login(client, username="al/ice#")
        assert bad_name.status_code == 400 and "a username is" in bad_name.text


@pytest.mark.anyio
async def test_actions_need_the_csrf_token_and_the_consoles_origin(console: str, mqtt_broker: str) -> None:
    host, port = mqtt_broker.removeprefix("mqtt://").split(":")
    async with httpx.AsyncClient(base_url=console) as client, aiomqtt.Client(host, int(port)) as observer:
        await observer.subscribe(f"{BASE}/a/d1/set", qos=1)
        await login(client)
        csrf = (await client.get("/api/session")).json()["csrf"]
        body = {"lock": "UNLOCKED"}
        refused = [
            await client.post("/api/devices/a/d1/set", json=body),
            await client.post("/api/devices/a/d1/set", json=body, headers={"x-csrf-token": "x" + csrf}),
            await client.post(
                "/api/devices/a/d1/set", json=body, headers={"x-csrf-token": csrf, "origin": "https://evil.example"}
            ),
            await client.post(
                "/api/devices/a/d1/set", json=body, headers={"x-csrf-token": csrf, "sec-fetch-site": "cross-site"}
            ),
        ]
        assert [r.status_code for r in refused] == [403] * 4
        bad = await client.post("/api/devices/a/d1/set", json={"lock": "OPEN"}, headers={"x-csrf-token": csrf})
        assert bad.status_code == 400
        sent = await client.post("/api/devices/a/d1/set", json={"lock": "LOCKED"}, headers={"x-csrf-token": csrf})
        assert sent.status_code == 202 and sent.json()["command"]["status"] == "published"
        message = await anext(observer.messages)
        assert json.loads(message.payload)["lock"] == "LOCKED"  # type: ignore[arg-type]  # the first to arrive


@pytest.mark.anyio
async def test_logout_needs_the_token_and_ends_the_session(console: str) -> None:
    async with httpx.AsyncClient(base_url=console) as client:
        await login(client)
        csrf = (await client.get("/api/session")).json()["csrf"]
        assert (await client.post("/logout", data={"csrf": "wrong"})).status_code == 403
        assert (await client.get("/api/session")).status_code == 200
        out = await client.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        client.cookies.clear()
        assert (await client.get("/api/session")).status_code == 401
