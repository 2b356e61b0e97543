"""Server-sent events from a session's view to one page, coalesced.

A stream starts with a snapshot of everything the page shows, then sends what changed at most once
per ``coalesce`` seconds: a device that changed ten times in a window is sent once, as it is at the
end of it, so a fleet of 10,000 devices moving at once costs one message per window, not one per
report. A comment line every ``HEARTBEAT`` seconds keeps proxies from closing an idle stream. The
stream ends when the page goes away or the session ends (the page then shows the login).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson

from twin.console.fleet import FleetView, Listener

__all__ = ["HEARTBEAT", "device_stream", "fleet_stream", "frame"]

HEARTBEAT = 15.0


def frame(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _fleet_snapshot(view: FleetView) -> dict[str, Any]:
    return {
        "rows": view.all_rows(),
        "bridges": view.bridge_list(),
        "fleet": _fleet_part(view),
        "link": view.link,
        "commands": list(view.commands.entries.values()),
    }


def _fleet_part(view: FleetView) -> dict[str, Any]:
    return {
        "present": view.fleet_present(),
        "state": view.fleet_state,
        "jobs": list(view.jobs.values()),
        "zones": list(view.zones.values()),
    }


def _fleet_changes(view: FleetView, listener: Listener) -> list[bytes]:
    frames = []
    if listener.rows:
        rows = [r if (r := view.row(k)) is not None else {"id": k, "removed": True} for k in listener.rows]
        frames.append(frame("rows", rows))
    if "bridges" in listener.kinds:
        frames.append(frame("bridges", view.bridge_list()))
    if listener.kinds & {"fleet", "jobs", "zones"}:
        frames.append(frame("fleet", _fleet_part(view)))
    if "link" in listener.kinds:
        frames.append(frame("link", view.link))
    if listener.commands:
        commands = [c for t in listener.commands if (c := view.commands.get(t)) is not None]
        frames.append(frame("commands", commands))
    return frames


def _device_snapshot(view: FleetView, key: str) -> dict[str, Any]:
    return {
        "row": view.row(key),
        "meta": view.device_meta(key),
        "twin": view.twins.get(key),
        "events": list(view.events.get(key, ())),
        "link": view.link,
        "commands": [c for c in view.commands.entries.values() if c.get("target") == key],
    }


def _device_changes(view: FleetView, listener: Listener, key: str) -> list[bytes]:
    frames = []
    if listener.rows or "actions" in listener.kinds:
        frames.append(frame("row", {"row": view.row(key), "meta": view.device_meta(key)}))
    if "twin" in listener.kinds:
        frames.append(frame("twin", view.twins.get(key)))
    if listener.events:
        frames.append(frame("events", listener.events))
    if "link" in listener.kinds:
        frames.append(frame("link", view.link))
    if listener.commands:
        commands = [c for t in listener.commands if (c := view.commands.get(t)) is not None]
        frames.append(frame("commands", commands))
    return frames


async def _follow(
    view: FleetView, listener: Listener, coalesce: float, snapshot: Callable[[], bytes]
) -> AsyncIterator[bytes]:
    view.listeners.add(listener)  # before the snapshot: nothing changes in between (no await)
    try:
        yield snapshot()
        while not listener.closed:
            with anyio.move_on_after(HEARTBEAT):
                await listener.wake.wait()
            if listener.closed:
                break
            if not listener.wake.is_set():
                yield b": heartbeat\n\n"
                continue
            await anyio.sleep(coalesce)
            if listener.device is None:
                frames = _fleet_changes(view, listener)
            else:
                frames = _device_changes(view, listener, listener.device)
            listener.reset()
            for chunk in frames:
                yield chunk
        yield frame("end", {"reason": "session ended"})
    finally:
        view.listeners.discard(listener)


def fleet_stream(view: FleetView, *, coalesce: float) -> AsyncIterator[bytes]:
    """The fleet page's stream: rows, bridges, jobs and zones, the link, this session's commands."""
    return _follow(view, Listener(), coalesce, lambda: frame("snapshot", _fleet_snapshot(view)))


def device_stream(view: FleetView, key: str, *, coalesce: float) -> AsyncIterator[bytes]:
    """A device page's stream: its row and list entry, twin, events and this session's commands on it."""
    return _follow(view, Listener(device=key), coalesce, lambda: frame("snapshot", _device_snapshot(view, key)))
