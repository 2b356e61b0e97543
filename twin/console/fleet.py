"""What one session sees of the fleet, built from the MQTT contract's topics (no I/O here).

:class:`FleetView` takes every message of the session's connection (:meth:`FleetView.receive`,
routed by a table on the topic's shape) and keeps what the pages show: one row per device (its
retained ``state`` merged with its entry of the device list), the bridges' availability and action
tables, the twins of the devices a page has open, recent events per device, the fleet service's
jobs and zones, and the commands this session sent with every answer they got.

Pages listen through :class:`Listener`: a change marks what it touched in every listener and wakes
it; the stream sends what is marked at most once per coalescing window (see :mod:`twin.console.stream`).
A payload that does not parse is dropped and counted; nothing a broker delivers can break the view.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson

from contracts.messages import LockState

__all__ = ["CommandLog", "FleetView", "Listener", "now_iso"]

log = logging.getLogger(__name__)

LOCK_STATES = frozenset(s.value for s in LockState)
EVENTS_PER_DEVICE = 20
DEVICES_WITH_EVENTS = 1000
COMMANDS_KEPT = 200


class Listener:
    """One page's stream: what changed since it last sent. ``device`` is set for a device page."""

    def __init__(self, *, device: str | None = None) -> None:
        self.device = device
        self.rows: set[str] = set()
        self.kinds: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.commands: dict[str, None] = {}
        self.closed = False
        self.wake = anyio.Event()

    def mark(self, kind: str) -> None:
        self.kinds.add(kind)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def reset(self) -> None:
        """After sending: wait for the next change."""
        self.rows, self.kinds, self.events, self.commands = set(), set(), [], {}
        self.wake = anyio.Event()


class CommandLog:
    """The commands this session sent, newest last, with the broker's and the bridge's answers."""

    def __init__(self, *, limit: int = COMMANDS_KEPT) -> None:
        self.limit = limit
        self.entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, entry: dict[str, Any]) -> None:
        self.entries[entry["transaction"]] = entry
        while len(self.entries) > self.limit:
            self.entries.popitem(last=False)

    def get(self, transaction: str | None) -> dict[str, Any] | None:
        return None if transaction is None else self.entries.get(transaction)


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if low <= value <= high else None


def now_iso() -> str:
    """Wall-clock time for people to read (sessions expire by the injected monotonic clock instead)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


class FleetView:
    def __init__(self, *, base: str) -> None:
        self.base = base
        self.rows: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self._pages: dict[tuple[str, str | None, int], list[str]] = {}
        self.actions: dict[str, dict[str, Any]] = {}
        self.bridges: dict[str, str] = {}
        self.twins: dict[str, Any] = {}
        self.events: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.fleet_state: str | None = None
        self.jobs: dict[str, dict[str, Any]] = {}
        self.zones: dict[str, dict[str, Any]] = {}
        self.commands = CommandLog()
        self.link: dict[str, Any] = {"connected": False, "error": None}
        self.listeners: set[Listener] = set()
        self.dropped = 0
        self._routes: dict[str, Callable[[list[str], bytes], None]] = {
            "bridge": self._bridge,
            "fleet": self._fleet,
        }
        self._device_leaves: dict[str, Callable[[str, bytes], None]] = {
            "state": self._state,
            "twin": self._twin,
            "event": self._event,
        }

    # -- listeners -------------------------------------------------------------------------------
    def _touch_row(self, key: str) -> None:
        for listener in self.listeners:
            if listener.device is None or listener.device == key:
                listener.rows.add(key)
                listener.wake.set()

    def _touch(self, kind: str, device: str | None = None) -> None:
        for listener in self.listeners:
            if device is None or listener.device is None or listener.device == device:
                listener.mark(kind)

    def touch_command(self, transaction: str) -> None:
        entry = self.commands.get(transaction)
        for listener in self.listeners:
            if entry is not None and (listener.device is None or listener.device == entry.get("target")):
                listener.commands[transaction] = None
                listener.wake.set()

    def set_link(self, *, connected: bool, error: str | None = None) -> None:
        self.link = {"connected": connected, "error": error}
        self._touch("link")

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    # -- what pages are sent ------------------------------------------------------------------
    def row(self, key: str) -> dict[str, Any] | None:
        state, meta = self.rows.get(key), self.meta.get(key)
        if state is None and meta is None:
            return None
        vendor, _, device = key.partition("/")
        out: dict[str, Any] = {"id": key, "vendor": vendor, "device": device, "lock": "UNKNOWN", "reported": False}
        out.update(name=None, model=None, shard=None)
        if meta is not None:
            out.update(name=meta.get("name"), model=meta.get("model"), shard=meta.get("shard"))
        if state is not None:
            out.update(state, reported=True)
        return out

    def all_rows(self) -> list[dict[str, Any]]:
        return [r for key in self.rows.keys() | self.meta.keys() if (r := self.row(key)) is not None]

    def bridge_list(self) -> list[dict[str, str]]:
        return [{"id": k, "state": v} for k, v in sorted(self.bridges.items())]

    def device_meta(self, key: str) -> dict[str, Any]:
        """The device's list entry plus the action table of what it offers (for the device page)."""
        vendor = key.partition("/")[0]
        meta = dict(self.meta.get(key) or {})
        table = self.actions.get(vendor, {})
        meta["action_table"] = {name: table[name] for name in meta.get("actions", []) if name in table}
        return meta

    def fleet_present(self) -> bool:
        """Whether anything is retained under {base}/fleet/ (jobs and zones are shown only then)."""
        return self.fleet_state is not None or bool(self.jobs) or bool(self.zones)

    # -- routing ------------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes) -> None:
        """One message of the session's connection (never raises on what a broker delivers)."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return
        parts = topic[len(prefix) :].split("/")
        try:
            route = self._routes.get(parts[0])
            if route is not None:
                route(parts[1:], payload)
            elif len(parts) == 3 and (leaf := self._device_leaves.get(parts[2])) is not None:
                leaf(f"{parts[0]}/{parts[1]}", payload)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.dropped += 1
            log.debug("dropped a message on %s: %s", topic, exc)

    def _bridge(self, parts: list[str], payload: bytes) -> None:
        if len(parts) < 2:
            return
        vendor, shard, rest = parts[0], None, parts[1:]
        if rest[0] == "shards" and len(rest) >= 3:
            shard, rest = rest[1], rest[2:]
        name = vendor if shard is None else f"{vendor} shard {shard}"
        if rest == ["state"]:
            if payload:
                self.bridges[name] = payload.decode(errors="replace")[:16]
            else:
                self.bridges.pop(name, None)
            self._touch("bridges")
        elif rest[0] == "devices" and len(rest) <= 2:
            page = int(rest[1]) if len(rest) == 2 else 0
            self._devices_page(vendor, shard, page, payload)
        elif rest == ["actions"]:
            doc = _json(payload) if payload else None
            if isinstance(doc, dict) and isinstance(doc.get("actions"), dict):
                self.actions[vendor] = doc["actions"]
            else:
                self.actions.pop(vendor, None)
            self._touch("actions")

    def _devices_page(self, vendor: str, shard: str | None, page: int, payload: bytes) -> None:
        doc = _json(payload) if payload else None
        entries = doc.get("devices") if isinstance(doc, dict) else None
        before = self._pages.pop((vendor, shard, page), [])
        keys: list[str] = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            key = f"{vendor}/{entry['id']}"
            keys.append(key)
            self.meta[key] = {
                "name": entry.get("name") if isinstance(entry.get("name"), str) else None,
                "model": entry.get("model") if isinstance(entry.get("model"), str) else None,
                "shard": shard,
                "capabilities": [c for c in entry.get("capabilities") or [] if isinstance(c, str)],
                "actions": [a for a in entry.get("actions") or [] if isinstance(a, str)],
                "desired_fields": [f for f in entry.get("desired_fields") or [] if isinstance(f, str)],
            }
            self._touch_row(key)
        if keys:
            self._pages[(vendor, shard, page)] = keys
        listed = {k for ks in self._pages.values() for k in ks}
        for key in set(before) - listed:
            self.meta.pop(key, None)
            self._touch_row(key)

    def _fleet(self, parts: list[str], payload: bytes) -> None:
        if parts == ["state"]:
            self.fleet_state = payload.decode(errors="replace")[:16] if payload else None
            self._touch("fleet")
        elif len(parts) == 2 and parts[0] in ("jobs", "zones"):
            table = self.jobs if parts[0] == "jobs" else self.zones
            doc = _json(payload) if payload else None
            if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                table[parts[1]] = doc
            else:
                table.pop(parts[1], None)
            self._touch(parts[0])
            self._touch("fleet")

    def _state(self, key: str, payload: bytes) -> None:
        doc = _json(payload) if payload else None
        if not isinstance(doc, dict):
            if self.rows.pop(key, None) is not None:
                self._touch_row(key)
            return
        lock = doc.get("lock")
        online = doc.get("online")
        latitude = _number(doc.get("latitude"), -90, 90)
        longitude = _number(doc.get("longitude"), -180, 180)
        positioned = latitude is not None and longitude is not None
        updated = doc.get("updated_at")
        self.rows[key] = {
            "lock": lock if lock in LOCK_STATES else "UNKNOWN",
            "online": online if isinstance(online, bool) else None,
            "battery": _number(doc.get("battery"), 0, 100),
            "latitude": latitude if positioned else None,
            "longitude": longitude if positioned else None,
            "updated_at": updated if isinstance(updated, str) else None,
        }
        self._touch_row(key)

    def _twin(self, key: str, payload: bytes) -> None:
        doc = _json(payload) if payload else None
        if isinstance(doc, dict):
            self.twins[key] = doc
        else:
            self.twins.pop(key, None)
        self._touch("twin", key)

    def _event(self, key: str, payload: bytes) -> None:
        doc = _json(payload)
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise ValueError("not an event")
        history = self.events.pop(key, None) or deque(maxlen=EVENTS_PER_DEVICE)
        history.append(doc)
        self.events[key] = history  # most recently active last
        while len(self.events) > DEVICES_WITH_EVENTS:
            self.events.popitem(last=False)
        for listener in self.listeners:
            if listener.device == key:
                listener.events.append(doc)
                listener.wake.set()

    # -- answers --------------------------------------------------------------------------------
    def answer(self, payload: bytes, correlation: bytes | None = None) -> bool:
        """An answer of a bridge or the fleet service; True when it was to one of this session's commands."""
        doc = _json(payload)
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
            return False
        transaction = doc.get("transaction")
        if not isinstance(transaction, str) and correlation is not None:
            transaction = correlation.decode(errors="replace")
        entry = self.commands.get(transaction if isinstance(transaction, str) else None)
        if entry is None:
            return False
        error = doc.get("error") if isinstance(doc.get("error"), dict) else None
        data = doc.get("data") if isinstance(doc.get("data"), dict) else None
        entry["answers"].append({"status": doc["status"][:32], "error": error, "data": data, "at": now_iso()})
        entry["status"] = doc["status"][:32]
        self.touch_command(entry["transaction"])
        return True
