"""The Segway bridge driven over a real mosquitto, against the simulator over real HTTP."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiomqtt
import anyio
import httpx
import pytest

from bridges.segway import SegwayAdapter
from bridges.segway.client import PATHS
from bridges.segway.simulator import SegwaySimulator
from contracts.errors import ErrorCode
from twin.asgi import serve_asgi
from twin.config import load_vendor_settings
from twin.testing import BridgeHarness

from .conftest import CLIENT_ID, DEVICES, SECRET, make_settings

pytestmark = pytest.mark.anyio

BIKE = DEVICES[0]


@asynccontextmanager
async def bridge(
    broker: str, tmp_path: Path, *, sim_options: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[BridgeHarness, SegwaySimulator, SegwayAdapter]]:
    options: dict[str, Any] = {"bolt_seconds": 0.05, "push_retry_delay": 0.1, "tick": 0.02}
    options.update(sim_options or {})
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES, **options)
    async with sim.serve() as served:
        values: dict[str, Any] = {"push_enabled": True, "poll_interval": 30.0}
        values.update(settings)
        adapter = SegwayAdapter(settings=make_settings(served.url, **values))
        async with BridgeHarness(adapter=adapter, broker_url=broker, data_dir=tmp_path) as h:
            if adapter.push_address is not None:
                sim.webhook_url = adapter.push_address.url
            try:
                yield h, sim, adapter
            finally:
                sim.webhook_url = None  # no push into an intake that is closing


def signed(fields: dict[str, str]) -> str:
    text = "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + "&client_secret=" + SECRET
    return urlencode({**fields, "signature": hashlib.md5(text.encode()).hexdigest()})


def status_push(*, locked: bool, at: int) -> dict[str, str]:
    return {
        "iotCode": BIKE,
        "platformCode": CLIENT_ID,
        "online": "true",
        "locked": "true" if locked else "false",
        "powerPercent": "55",
        "odometer": "20000",
        "remainderRange": "1500",
        "statusUtcTime": str(at),
    }


async def send_push(adapter: SegwayAdapter, path: str, body: str) -> httpx.Response:
    assert adapter.push_address is not None
    async with httpx.AsyncClient(base_url=adapter.push_address.url) as http:
        return await http.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


async def test_mqtt_unlock_and_lock_confirmed(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        final = await h.set(BIKE, {"lock": "UNLOCKED"})
        assert final["status"] == "succeeded"
        state = await h.wait_retained(BIKE, "state", lambda s: s["lock"] == "UNLOCKED")
        assert state["online"] is True
        final = await h.set(BIKE, {"lock": "LOCKED"})
        assert final["status"] == "succeeded"
        twin = await h.wait_retained(BIKE, "twin", lambda t: t["reported"].get("lock") == "LOCKED")
        assert twin["metadata"]["lock"]["source"] in ("push", "confirm", "poll")
        assert len(sim.calls_to(PATHS["lock"])) == 1
        assert len(sim.calls_to(PATHS["unlock"])) == 1


async def test_mqtt_state_in_twin_units(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        vehicle = sim.fleet[BIKE]
        final = await h.get(BIKE)
        assert final["status"] == "succeeded"
        state = await h.wait_retained(BIKE, "state", lambda s: "remaining_range_m" in s)
        assert state["remaining_range_m"] == vehicle.remaining_range * 10
        assert state["odometer_m"] == round(vehicle.odometer)
        assert state["battery"] == round(vehicle.battery)
        assert state["latitude"] == round(vehicle.latitude, 6)
        for key in ("charging", "speed", "speed_mode", "signal", "hdop", "satellites", "altitude", "longitude"):
            assert key in state
        assert await h.wait_retained(BIKE, "availability", lambda a: a == "online")


async def test_mqtt_lock_while_riding_busy_not_retried(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        sim.fleet[BIKE].ride()
        final = await h.set(BIKE, {"lock": "LOCKED"})
        assert final["status"] == "failed"
        assert final["error"]["code"] == ErrorCode.DEVICE_BUSY
        assert final["error"]["vendor_code"] == "15600"
        assert final["error"]["retryable"] is False
        assert len(sim.calls_to(PATHS["lock"])) == 1


async def test_mqtt_offline_retried_until_expired(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        sim.fleet[BIKE].go_offline()
        final = await h.set(BIKE, {"lock": "UNLOCKED", "expires_in": 2})
        assert final["status"] == "expired"
        assert len(sim.calls_to(PATHS["unlock"])) >= 2
        assert sim.fleet[BIKE].locked is True


async def test_mqtt_offline_availability(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        await h.get(BIKE)
        await h.wait_retained(BIKE, "availability", lambda a: a == "online")
        sim.fleet[BIKE].go_offline()
        await h.get(BIKE)
        await h.wait_retained(BIKE, "availability", lambda a: a == "offline")
        state = await h.wait_retained(BIKE, "state", lambda s: s["online"] is False)
        assert state["lock"] == "LOCKED"


async def test_mqtt_token_expiry_mid_run(mqtt_broker: str, tmp_path: Path) -> None:
    sim_options = {"token_lifetime": 0.5, "token_overlap": 0.0}
    async with bridge(mqtt_broker, tmp_path, sim_options=sim_options, token_refresh_ahead=0.0) as (h, sim, _):
        for desired in ("UNLOCKED", "LOCKED", "UNLOCKED"):
            final = await h.set(BIKE, {"lock": desired})
            assert final["status"] == "succeeded"
            sim.revoke_tokens()
        assert len(sim.calls_to(PATHS["token"])) >= 3


async def test_mqtt_push_bad_signature_401_no_change(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, _, adapter):
        await h.get(BIKE)
        before = await h.wait_retained(BIKE, "twin", lambda t: t["reported"].get("lock") == "LOCKED")
        fields = status_push(locked=False, at=4_000_000_000)
        forged = urlencode({**fields, "signature": "0" * 32})
        answer = await send_push(adapter, "/v2/vehicle/status", forged)
        assert answer.status_code == 401
        unsigned = await send_push(adapter, "/v2/vehicle/status", urlencode(fields))
        assert unsigned.status_code == 401
        await h.get(BIKE)
        after = h.retained_json(BIKE, "twin")
        assert after["reported"]["lock"] == "LOCKED"
        assert after["reported"] == before["reported"]


async def test_mqtt_push_reordered_older_status_never_wins(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, _, adapter):
        now = int(time.time())  # within the push window, and not ahead of our clock (it would count as now)
        newer = await send_push(adapter, "/v2/vehicle/status", signed(status_push(locked=False, at=now)))
        assert newer.status_code == 200
        assert newer.json()["code"] == 0
        # answered 200 only after the store: the retained twin already has it
        twin = await h.wait_retained(BIKE, "twin", lambda t: t["reported"].get("lock") == "UNLOCKED")
        assert twin["metadata"]["lock"]["source"] == "push"
        assert twin["metadata"]["lock"]["observed_at"] == datetime.fromtimestamp(now, UTC).isoformat()
        older = await send_push(adapter, "/v2/vehicle/status", signed(status_push(locked=True, at=now - 60)))
        assert older.status_code == 200  # answered once the engine took it (a read now would win: it is newer)
        assert h.runtime is not None
        reported = h.runtime.engine.twins[BIKE].reported
        assert reported["lock"] == "UNLOCKED" and reported["remaining_range_m"] == 15000


async def test_mqtt_alert_and_fault_events(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        await sim.push_alert(BIKE, 3)
        await sim.push_alert(BIKE, 3, appearing=False)
        await sim.push_fault(BIKE, 21)
        alerts = await h.wait_for(lambda: len(h.events(BIKE, "alert")) == 2 and h.events(BIKE, "alert"))
        assert [(a["data"]["meaning"], a["data"]["status"]) for a in alerts] == [
            ("illegal dismantling", "appearing"),
            ("illegal dismantling", "disappeared"),
        ]
        faults = await h.wait_for(lambda: h.events(BIKE, "fault"))
        assert faults[0]["data"]["code"] == 21


async def test_mqtt_bluetooth_key_never_retained(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path) as (h, sim, _):
        final = await h.request(BIKE, "set_bluetooth_key", {"key": "Qw12Er34"})
        assert final["status"] == "succeeded"
        final = await h.request(BIKE, "get_bluetooth_key")
        assert final["status"] == "succeeded"
        assert final["data"] == {"key": "Qw12Er34"}
        await h.get(BIKE)
        await h.set(BIKE, {"lock": "UNLOCKED"})
        stored = await retained_now(mqtt_broker, h.base)
        assert {f"{h.base}/segway/{BIKE}/twin", f"{h.base}/segway/{BIKE}/state"} <= set(stored)
        for topic, payload in stored.items():
            assert b"Qw12Er34" not in payload, topic
        # nothing the bridge published carries it but the one answer to the one request
        allowed = (h.topic(BIKE, "request/set_bluetooth_key"), h.topic(BIKE, "response/get_bluetooth_key"))
        leaks = [t for t, p, _, _ in h.messages if b"Qw12Er34" in p and t not in allowed]
        assert leaks == []
        assert sim.fleet[BIKE].bluetooth_key == "Qw12Er34"
        twin = h.retained_json(BIKE, "twin")
        assert "Qw12Er34" not in json.dumps(twin)


async def retained_now(broker: str, base: str) -> dict[str, bytes]:
    """What a new subscriber gets: every retained message under ``base``."""
    url = urlsplit(broker)
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(url.hostname or "127.0.0.1", url.port or 1883, identifier=f"{base}-fresh") as client:
        await client.subscribe(f"{base}/#", qos=1)
        with anyio.move_on_after(0.5):
            async for msg in client.messages:
                if msg.retain and isinstance(msg.payload, bytes):
                    found[msg.topic.value] = msg.payload
    return found


ACTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("find", {}, "sound"),
    ("set_switches", {"alert_sensitivity": 1, "low_power_value": 20}, "switch_setting"),
    ("enable_switches", {"assisted_mode": True}, "switch_enable"),
    ("set_ambient_light", {"brightness": "low", "parking": {"on": False}}, "ambient_light"),
    ("set_sound", {"enabled": False}, "sound_setting"),
    (
        "set_upload_interval",
        {"location": {"unlocked": 10, "locked": 900}, "status": {"riding": 10, "not_riding": 60, "locked": 600}},
        "upload_interval",
    ),
    ("get_battery", {}, "battery_info"),
    ("get_location", {"realtime": True}, "location"),
]


async def test_mqtt_every_action(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, sim, _):
        for name, body, path in ACTIONS:
            final = await h.request(BIKE, name, body)
            assert final["status"] == "succeeded", (name, final)
            assert len(sim.calls_to(PATHS[path], iot_code=BIKE)) >= 1, name
        final = await h.request(BIKE, "open_battery_cover")
        assert final["status"] == "failed"
        assert final["error"]["code"] == ErrorCode.POLICY_DENIED
        await h.set(BIKE, {"lock": "UNLOCKED"})
        final = await h.request(BIKE, "open_battery_cover")
        assert final["status"] == "succeeded"
        assert sim.fleet[BIKE].battery_cover_open


STATUS_OK = {"riding": 10, "not_riding": 60, "locked": 600}
BAD: list[tuple[str, dict[str, Any]]] = [
    ("set_upload_interval", {"location": {"unlocked": 5, "locked": 900}, "status": STATUS_OK}),
    ("set_sound", {"volume": 4}),
    ("set_switches", {"low_power_value": 31}),
    ("set_bluetooth_key", {"key": "nope"}),
]  # fmt: skip


async def test_mqtt_action_arguments_rejected_before_vendor_call(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, sim, _):
        before = len(sim.calls)
        for name, body in BAD:
            final = await h.request(BIKE, name, body)
            assert final["status"] == "rejected", name
            assert final["error"]["code"] == ErrorCode.INVALID_PAYLOAD
        assert len(sim.calls) == before


# retryable codes are injected once: the engine sends again and the command succeeds
RETRIED = {15001, 15101, 15301, 15302, 15303, 15602, 15612}
FAILED = {
    15004: ErrorCode.INVALID_PAYLOAD,
    15100: ErrorCode.AUTH_FAILED,
    15102: ErrorCode.UNKNOWN_DEVICE,
    15300: ErrorCode.PERMISSION_DENIED,
    15400: ErrorCode.VENDOR_ERROR,
    15600: ErrorCode.DEVICE_BUSY,
    15601: ErrorCode.VENDOR_ERROR,
    15603: ErrorCode.VENDOR_ERROR,
    15611: ErrorCode.VENDOR_ERROR,
    15635: ErrorCode.POLICY_DENIED,
    15638: ErrorCode.VENDOR_ERROR,
    15707: ErrorCode.UNSUPPORTED,
    15990: ErrorCode.PERMISSION_DENIED,
    15996: ErrorCode.POLICY_DENIED,
    15997: ErrorCode.DEVICE_BUSY,
}


async def test_mqtt_every_error_code(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, sim, _):
        vehicle = sim.fleet[BIKE]
        for code, expected in FAILED.items():
            before = len(sim.calls_to(PATHS["sound"]))
            vehicle.inject(code)
            final = await h.request(BIKE, "find")
            assert final["status"] == "failed", code
            assert final["error"]["code"] == expected, code
            assert final["error"]["vendor_code"] == str(code)
            assert len(sim.calls_to(PATHS["sound"])) == before + 1, code  # never sent again
        for code in sorted(RETRIED):
            before = len(sim.calls_to(PATHS["sound"]))
            vehicle.inject(code)
            final = await h.request(BIKE, "find", {"expires_in": 10})
            assert final["status"] == "succeeded", code
            assert len(sim.calls_to(PATHS["sound"])) == before + 2, code
        # upgrading: worth another try, but not before the firmware is done (30 s): expired
        vehicle.upgrading = True
        before = len(sim.calls_to(PATHS["sound"]))
        final = await h.request(BIKE, "find", {"expires_in": 1})
        assert final["status"] == "expired"
        assert final["error"]["code"] == ErrorCode.EXPIRED
        assert len(sim.calls_to(PATHS["sound"])) == before + 1


async def test_mqtt_concurrent_commands_share_one_refresh(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, sim, _):
        await h.get(BIKE)
        tokens = len(sim.calls_to(PATHS["token"]))
        sim.revoke_tokens()
        finals: list[dict[str, Any]] = []

        async def unlock(device: str) -> None:
            finals.append(await h.set(device, {"lock": "UNLOCKED"}))

        async with anyio.create_task_group() as tg:
            for device in DEVICES:
                tg.start_soon(unlock, device)
        assert [f["status"] for f in finals] == ["succeeded"] * len(DEVICES)
        assert len(sim.calls_to(PATHS["token"])) == tokens + 1


async def test_mqtt_read_actions_update_state(mqtt_broker: str, tmp_path: Path) -> None:
    async with bridge(mqtt_broker, tmp_path, poll_interval=None) as (h, sim, _):
        vehicle = sim.fleet[BIKE]
        vehicle.battery = 42.0
        vehicle.latitude, vehicle.longitude = 48.8584, 2.2945
        final = await h.request(BIKE, "get_battery")
        assert final["status"] == "succeeded"
        assert final["data"]["vehicle_percent"] == 42
        await h.wait_retained(BIKE, "state", lambda s: s.get("battery") == 42)
        final = await h.request(BIKE, "get_location")
        assert final["data"]["latitude"] == 48.8584
        state = await h.wait_retained(BIKE, "state", lambda s: s.get("latitude") == 48.8584)
        assert state["longitude"] == 2.2945


async def test_mqtt_demo_kit_without_push(mqtt_broker: str, tmp_path: Path) -> None:
    kit = SegwayAdapter.simulator(devices=2)
    async with serve_asgi(kit.app) as served:
        settings = load_vendor_settings(SegwayAdapter.settings_model, kit.settings(served.url))
        adapter = SegwayAdapter(settings=settings)
        async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
            device = kit.device_ids[0]
            final = await h.set(device, {"lock": "UNLOCKED"})
            assert final["status"] == "succeeded"
            twin = await h.wait_retained(device, "twin", lambda t: t["reported"].get("lock") == "UNLOCKED")
            assert twin["metadata"]["lock"]["source"] in ("confirm", "poll")
