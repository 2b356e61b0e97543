"""Rendering of the retained documents (twin, state) from store records."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from contracts.errors import ErrorInfo
from contracts.messages import (
    CommandStatus,
    CommandSummary,
    DesiredLock,
    DeviceState,
    FieldMetadata,
    LockState,
    Response,
    TwinDocument,
)
from twin.store import CommandRecord, TwinRecord

__all__ = ["dumps", "iso", "render_state", "render_twin", "response_for"]

IN_FLIGHT = frozenset({CommandStatus.SENT, CommandStatus.ACKNOWLEDGED})


def iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def summary(cmd: CommandRecord, redact: Callable[[Any], Any] = lambda value: value) -> CommandSummary:
    return CommandSummary(
        command_id=cmd.id,
        transaction=cmd.transaction,
        kind=cmd.kind,
        name=cmd.name,
        value=None if cmd.sensitive else redact(cmd.value),
        status=cmd.status,
        source=cmd.source,
        accepted_at=iso(cmd.accepted_at),
        expires_at=iso(cmd.expires_at),
        updated_at=iso(cmd.updated_at),
        attempts=cmd.attempts,
        error=None if cmd.error is None else ErrorInfo.model_validate(cmd.error),
    )


def render_twin(
    twin: TwinRecord,
    command: CommandRecord | None,
    *,
    hold: bool,
    redact: Callable[[Any], Any] = lambda value: value,
) -> TwinDocument:
    """``desired`` is stored redacted already; ``redact`` applies to the command's value."""
    delta = {k: v for k, v in twin.desired.items() if twin.reported.get(k) != v}
    return TwinDocument(
        version=twin.version,
        desired=twin.desired,
        reported=twin.reported,
        delta=delta,
        metadata={k: FieldMetadata.model_validate(v) for k, v in twin.metadata.items()},
        command=None if command is None else summary(command, redact),
        hold=DesiredLock.LOCKED if hold else None,
    )


def render_state(twin: TwinRecord, in_flight_lock: CommandRecord | None) -> DeviceState:
    """The flat state: LOCKING/UNLOCKING only while a lock command is really in flight."""
    if in_flight_lock is not None and in_flight_lock.status in IN_FLIGHT:
        lock = LockState.LOCKING if in_flight_lock.value == DesiredLock.LOCKED else LockState.UNLOCKING
    else:
        lock = LockState(twin.reported.get("lock", LockState.UNKNOWN))
    received = [m["received_at"] for m in twin.metadata.values() if "received_at" in m]
    updated = max(received) if received else datetime.now(UTC).isoformat()
    extra: Mapping[str, Any] = {k: v for k, v in twin.reported.items() if k != "lock"}
    return DeviceState.model_validate({**extra, "lock": lock, "updated_at": updated})


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
