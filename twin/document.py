"""Rendering of the retained documents (twin, state) from store records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from contracts.errors import ErrorInfo
from contracts.messages import CommandStatus, DesiredLock, EventType, LockState, Response
from twin.store import CommandRecord, TwinRecord

__all__ = [
    "iso",
    "render_event",
    "render_state",
    "render_twin",
    "response_for",
]

IN_FLIGHT = frozenset({CommandStatus.SENT, CommandStatus.ACKNOWLEDGED})


def iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# The renderers build the JSON documents directly: they run for every change of every device, and
# validating nested pydantic models there cost more than everything else on the command path. The
# models in ``contracts`` stay the contract: tests validate what these functions produce against them.


def summary(cmd: CommandRecord, redact: Callable[[Any], Any] = lambda value: value) -> dict[str, Any]:
    """The ``command`` of a twin document (shape: :class:`~contracts.messages.CommandSummary`)."""
    return {
        "command_id": cmd.id,
        "transaction": cmd.transaction,
        "kind": cmd.kind,
        "name": cmd.name,
        "value": None if cmd.sensitive else redact(cmd.value),
        "status": cmd.status.value,
        "source": cmd.source,
        "accepted_at": _iso(cmd.accepted_at),
        "expires_at": _iso(cmd.expires_at),
        "updated_at": _iso(cmd.updated_at),
        "attempts": cmd.attempts,
        "error": cmd.error,
    }


def render_twin(
    twin: TwinRecord,
    command: CommandRecord | None,
    *,
    hold: bool,
    redact: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any]:
    """The twin document (shape: :class:`~contracts.messages.TwinDocument`).

    ``desired`` is stored redacted already; ``redact`` applies to the command's value.
    """
    return {
        "version": twin.version,
        "desired": twin.desired,
        "reported": twin.reported,
        "delta": {k: v for k, v in twin.desired.items() if twin.reported.get(k) != v},
        "metadata": twin.metadata,
        "command": None if command is None else summary(command, redact),
        "hold": DesiredLock.LOCKED.value if hold else None,
    }


def render_event(type: EventType, data: dict[str, Any]) -> dict[str, Any]:
    """An event (shape: :class:`~contracts.messages.Event`), stamped now."""
    return {"type": type.value, "at": datetime.now(UTC).isoformat(), "data": data}


def render_state(twin: TwinRecord, current: CommandRecord | None) -> dict[str, Any]:
    """The flat state (shape: :class:`~contracts.messages.DeviceState`).

    ``lock`` is LOCKING/UNLOCKING only while a lock command is really in flight.
    """
    if current is not None and current.kind == "set" and current.name == "lock" and current.status in IN_FLIGHT:
        lock = LockState.LOCKING if current.value == DesiredLock.LOCKED else LockState.UNLOCKING
    else:
        lock = LockState(twin.reported.get("lock", LockState.UNKNOWN))
    received = [m["received_at"] for m in twin.metadata.values() if "received_at" in m]
    updated = max(received) if received else datetime.now(UTC).isoformat()
    return {**twin.reported, "lock": lock.value, "updated_at": updated}


def response_for(cmd: CommandRecord, status: CommandStatus | None = None) -> Response:
    status = status or cmd.status
    data: dict[str, Any] | None
    if status == CommandStatus.ACCEPTED:
        data = {"name": cmd.name, "expires_at": iso(cmd.expires_at).isoformat()}
    else:
        data = cmd.result
    return Response(
        transaction=cmd.transaction,
        command_id=cmd.id,
        status=status,
        data=data,
        error=None if cmd.error is None or status == CommandStatus.ACCEPTED else ErrorInfo.model_validate(cmd.error),
    )
