"""Every MQTT payload of locktwin, declared once.

Inbound models (what users send) tolerate unknown keys so that newer clients keep working, but the
keys that matter are strictly typed. Outbound models (what locktwin publishes) are what the JSON
Schemas and the AsyncAPI document are generated from.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.errors import ErrorInfo

__all__ = [
    "DEVICE_ID_PATTERN",
    "DEVICE_ID_RE",
    "TRANSACTION_PATTERN",
    "ActionInfo",
    "ActionRequest",
    "Availability",
    "BridgeActions",
    "BridgeBudget",
    "BridgeDevices",
    "BridgeHealth",
    "CommandStatus",
    "CommandSummary",
    "DesiredLock",
    "DeviceEntry",
    "DeviceState",
    "Event",
    "EventType",
    "FieldMetadata",
    "GetRequest",
    "InstancePartitions",
    "LockState",
    "Response",
    "SetRequest",
    "TwinDocument",
]

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
TRANSACTION_PATTERN = r"^[\x21-\x7e]{1,128}$"


class LockState(StrEnum):
    """Home Assistant's words for a lock."""

    LOCKED = "LOCKED"
    UNLOCKED = "UNLOCKED"
    LOCKING = "LOCKING"
    UNLOCKING = "UNLOCKING"
    JAMMED = "JAMMED"
    UNKNOWN = "UNKNOWN"


class DesiredLock(StrEnum):
    LOCKED = "LOCKED"
    UNLOCKED = "UNLOCKED"


class CommandStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        CommandStatus.REJECTED,
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.EXPIRED,
        CommandStatus.SUPERSEDED,
    }
)


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    transaction: str | None = Field(
        default=None,
        pattern=TRANSACTION_PATTERN,
        description="client-chosen id; the same transaction on the same device is executed once",
    )


class SetRequest(_Inbound):
    """Payload of ``{base}/{vendor}/{device}/set``: a patch of the desired state.

    The plain Home Assistant payloads ``LOCK`` and ``UNLOCK`` are accepted too and mean
    ``{"lock": "LOCKED"}`` and ``{"lock": "UNLOCKED"}``. Vendors may declare more desired fields
    (e.g. door-lock cards); those arrive as extra keys and are validated by the vendor's models.
    """

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    lock: DesiredLock | None = None
    expires_in: float | None = Field(
        default=None, gt=0, le=86400, description="seconds the command may take before it expires"
    )
    issued_at: AwareDatetime | None = Field(
        default=None, description="when the sender issued the command; expiry counts from here"
    )
    if_version: int | None = Field(default=None, ge=0, description="refuse unless the twin has this version")


class GetRequest(_Inbound):
    """Payload of ``{base}/{vendor}/{device}/get`` (may be empty)."""


class ActionRequest(_Inbound):
    """Payload of ``{base}/{vendor}/{device}/request/{action}``: the action's arguments plus envelope keys."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    expires_in: float | None = Field(default=None, gt=0, le=86400)
    issued_at: AwareDatetime | None = None


class Response(BaseModel):
    """Answer on ``{base}/{vendor}/{device}/response/{set|get|action}`` or the MQTT v5 response topic."""

    model_config = ConfigDict(extra="forbid")

    transaction: str | None
    command_id: str | None
    status: CommandStatus
    data: dict[str, Any] | None = None
    error: ErrorInfo | None = None


class FieldMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observed_at: datetime | None = Field(description="when the vendor says the value was true")
    received_at: datetime = Field(description="when locktwin learned it")
    source: str = Field(description="poll, push, command, get, start ...")


class CommandSummary(BaseModel):
    """The current or last command of a device, as shown in its twin."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    transaction: str | None
    kind: Literal["set", "action"]
    name: str = Field(description="desired field or action name")
    value: Any = None
    status: CommandStatus
    source: str
    accepted_at: datetime
    expires_at: datetime
    updated_at: datetime
    attempts: int
    error: ErrorInfo | None = None


class TwinDocument(BaseModel):
    """Retained on ``{base}/{vendor}/{device}/twin``: AWS-shadow-like desired/reported/delta."""

    model_config = ConfigDict(extra="forbid")

    version: int
    desired: dict[str, Any]
    reported: dict[str, Any]
    delta: dict[str, Any]
    metadata: dict[str, FieldMetadata]
    command: CommandSummary | None
    hold: DesiredLock | None = None


class DeviceState(BaseModel):
    """Retained on ``{base}/{vendor}/{device}/state``: flat, for dashboards and Home Assistant.

    ``lock`` is LOCKING/UNLOCKING only while a command is in flight, otherwise what was observed.
    Vendors add their own telemetry keys (speed, odometer_m, ...).
    """

    model_config = ConfigDict(extra="allow")

    lock: LockState
    online: bool | None = None
    battery: float | None = Field(default=None, ge=0, le=100, description="percent")
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    updated_at: datetime


Availability = Literal["online", "offline"]


class DeviceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    name: str | None = None
    model: str | None = None
    capabilities: list[str]
    actions: list[str]
    desired_fields: list[str]


class InstancePartitions(BaseModel):
    """Retained on ``{base}/bridge/{vendor}/instances/{instance}/partitions`` by each instance of a bridge
    that shares a PostgreSQL store: which partitions of the fleet it serves now. Its availability is
    ``.../instances/{instance}/state`` (``online`` / ``offline``, its last will); the vendor's
    ``bridge/{vendor}/state`` is the intake's, which one live instance holds at a time."""

    model_config = ConfigDict(extra="forbid")

    instance: str
    partitions: list[int] = Field(description="the partitions it holds (0 to count - 1)")
    count: int = Field(description="how many partitions the fleet has")
    intake: bool = Field(description="whether it holds the intake session that takes commands in")
    since: datetime = Field(description="when this set of partitions began")


class BridgeHealth(BaseModel):
    """Retained on ``{base}/bridge/{vendor}/health``: whether the bridge can do its work.

    ``degraded`` while its store cannot write (a full disk, an I/O error): commands are then refused
    ``STORE_UNAVAILABLE`` (retryable) and accepted ones wait; they resume by themselves when it can.
    The bridge's ``state`` stays ``online`` meanwhile (it still answers).
    """

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "degraded"]
    reason: str | None = Field(default=None, description="what is wrong, while degraded")
    since: datetime = Field(description="when the status began")


class BridgeBudget(BaseModel):
    """Retained on ``{base}/bridge/{vendor}/budget``: what the vendor account's calls cost this period.

    ``spent`` counts HTTP requests to the vendor (what vendors' quotas count: a Tuya unlock is two).
    With a ``budget`` configured, commands may spend all of it and status reads stop at ``reserve``,
    paced meanwhile to one every ``read_interval`` seconds; once it is spent, or the vendor says its
    own quota is, commands are answered ``failed`` / ``QUOTA_EXHAUSTED`` until ``retry_at``.
    Published when it changes, at most once a second.
    """

    model_config = ConfigDict(extra="forbid")

    calls: int | None = Field(description="the budget per period; None: none configured (spending is still counted)")
    per: Literal["hour", "day", "month"]
    spent: int = Field(ge=0, description="requests sent this period")
    remaining: int | None = Field(description="requests left of the budget; None: no budget")
    reserve: int = Field(ge=0, description="requests kept for commands: status reads stop there")
    period_start: datetime
    resets_at: datetime
    exhausted: Literal["budget", "vendor"] | None = Field(description="who stopped the calls, None: nobody")
    retry_at: datetime | None = Field(description="when calls go out again, while exhausted")
    devices_exhausted: int = Field(ge=0, description="devices whose own quota the vendor says is spent")
    read_interval: float | None = Field(description="seconds between status reads the budget allows; None: not paced")
    limit: int = Field(ge=1, description="vendor calls allowed in flight now (learned from the vendor's answers)")


class BridgeDevices(BaseModel):
    """Retained on ``{base}/bridge/{vendor}/devices`` (page 0) and ``.../devices/{page}`` (the others).

    A large fleet's list is split into pages of at most 64 KiB (less when the broker's Maximum Packet
    Size is smaller), because brokers refuse larger messages (EMQX: 1 MB by default, AWS IoT Core:
    128 KB) and a 100,000-device list is ~20 MB. Most fleets fit on page 0.
    """

    model_config = ConfigDict(extra="forbid")

    vendor: str
    devices: list[DeviceEntry]
    page: int = Field(default=0, ge=0, description="0 on bridge/{vendor}/devices, n on bridge/{vendor}/devices/{n}")
    pages: int = Field(default=1, ge=1, description="how many pages the list has (pages 0 .. pages-1)")


class ActionInfo(BaseModel):
    """One vendor action of a bridge's action table: what it does and the JSON Schema of its arguments."""

    model_config = ConfigDict(extra="forbid")

    description: str
    arguments: dict[str, Any] = Field(description="JSON Schema of the payload's arguments (envelope keys aside)")
    capability: str | None = Field(description="devices with this capability offer the action (None: every device)")
    idempotent: bool = Field(description="may be sent again when an earlier call's outcome is unknown")
    sensitive: bool = Field(description="its answer holds a secret (a bluetooth key): published once, never stored")


class BridgeActions(BaseModel):
    """Retained on ``{base}/bridge/{vendor}/actions``: the vendor's action table, for forms and validation.

    Which devices offer an action is in the device list (each entry's ``actions``); this says how to
    call it. Published with the device list on every (re)connect.
    """

    model_config = ConfigDict(extra="forbid")

    vendor: str
    actions: dict[str, ActionInfo]


class EventType(StrEnum):
    COMMAND = "command"
    DRIFT = "drift"
    ALERT = "alert"
    FAULT = "fault"
    STATE = "state"
    AUTH = "auth"


class Event(BaseModel):
    """Not retained, on ``{base}/{vendor}/{device}/event``."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    at: datetime
    data: dict[str, Any]
