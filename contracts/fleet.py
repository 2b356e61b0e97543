"""The fleet service's MQTT surface: queries, jobs and zones under ``{base}/fleet/``.

Requests go to ``{base}/fleet/request/{op}`` and are answered with the bridges' :class:`Response`
on ``{base}/fleet/response/{op}`` (or the MQTT v5 Response Topic, with its Correlation Data).
``data`` of a ``succeeded`` answer is the op's result model below (:class:`QueryResult`,
:class:`JobDocument`, :class:`JobList`, :class:`ZoneDocument`, :class:`ZoneList`, :class:`DryRun`).

Unlike the bridges' command payloads, a job spec and a zone document refuse unknown keys: a
misspelled ``rollout`` or ``abort`` ignored in silence would unlock a building at full speed with no
abort criteria. Simple requests (query, job and zone references) ignore unknown keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.messages import DEVICE_ID_PATTERN, TRANSACTION_PATTERN, LockState

__all__ = [
    "FLEET_OPS",
    "JOB_ID_PATTERN",
    "ZONE_ID_PATTERN",
    "AbortCriteria",
    "ActionOperation",
    "AtSchedule",
    "DailySchedule",
    "DeviceRow",
    "DryRun",
    "ExecutionStatus",
    "FleetTopics",
    "JobCreateRequest",
    "JobDocument",
    "JobEvent",
    "JobList",
    "JobListRequest",
    "JobOperation",
    "JobRequest",
    "JobSpec",
    "JobStatus",
    "JobTarget",
    "JobTargetSpec",
    "MultiPolygonGeometry",
    "PointGeometry",
    "PolygonGeometry",
    "QueryRequest",
    "QueryResult",
    "Rollout",
    "Schedule",
    "SetOperation",
    "ZoneDocument",
    "ZoneEvent",
    "ZoneGeometry",
    "ZoneList",
    "ZoneListRequest",
    "ZonePutRequest",
    "ZoneRequest",
    "ZoneRule",
]

JOB_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ZONE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: a device as a job target: ``<vendor>/<device>``
DEVICE_REF_PATTERN = r"^[a-z0-9_]{1,32}/[A-Za-z0-9_.:-]{1,128}$"
FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
ACTION_PATTERN = DEVICE_ID_PATTERN
FLEET_OPS = (
    "query",
    "job_create",
    "job_list",
    "job_show",
    "job_pause",
    "job_resume",
    "job_cancel",
    "zone_put",
    "zone_delete",
    "zone_list",
)
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ExecutionStatus(StrEnum):
    """One device's execution of a job (AWS IoT Jobs' words, plus SKIPPED)."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    #: the device was already in the target state when its turn came: nothing was sent
    SKIPPED = "SKIPPED"

    @property
    def is_final(self) -> bool:
        return self not in (ExecutionStatus.QUEUED, ExecutionStatus.IN_PROGRESS)

    @property
    def is_failure(self) -> bool:
        """Counts towards the abort criteria."""
        return self in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.REJECTED)


class JobStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    ABORTED = "ABORTED"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.CANCELED, JobStatus.ABORTED)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    transaction: str | None = Field(default=None, pattern=TRANSACTION_PATTERN, description="echoed in the answer")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -- queries ----------------------------------------------------------------------------------------


class QueryRequest(_Envelope):
    """``{base}/fleet/request/query``: a filter (see the README's filter language), a sort, a page."""

    q: str = Field(default="", max_length=4096, description="terms, all of which must hold")
    sort: str | None = Field(default=None, max_length=64, description="field, or -field for descending")
    limit: int = Field(default=100, ge=1, le=1000)
    page: int | None = Field(default=None, ge=0, description="0-based page of `limit` rows")
    cursor: str | None = Field(default=None, max_length=512, description="next_cursor of the previous answer")


class DeviceRow(BaseModel):
    """One device as the index knows it, from its retained state and twin."""

    model_config = ConfigDict(extra="forbid")

    vendor: str
    device: str
    lock: LockState
    online: bool | None
    battery: float | None
    latitude: float | None
    longitude: float | None
    updated_at: datetime | None = Field(description="the state's updated_at: the last report")
    held: bool = Field(description="the bridge keeps it LOCKED (hold)")
    pending: bool = Field(description="a command of its own is in flight")
    zones: list[str]
    model: str | None = None
    values: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="the state's other scalar values (speed, ranges, ...)"
    )


class QueryResult(BaseModel):
    """``data`` of a query answer (and the HTTP ``/query`` body)."""

    model_config = ConfigDict(extra="forbid")

    total: int = Field(description="devices matching the filter")
    rows: list[DeviceRow]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")
    took_ms: float


# -- jobs -------------------------------------------------------------------------------------------


class SetOperation(_Strict):
    """A desired field, as ``/set`` sends it (``lock`` or a vendor's own)."""

    kind: Literal["set"]
    field: str = Field(pattern=FIELD_PATTERN)
    value: Any


class ActionOperation(_Strict):
    """A vendor action, as ``/request/{action}`` sends it."""

    kind: Literal["action"]
    action: str = Field(pattern=ACTION_PATTERN)
    arguments: dict[str, Any] = Field(default_factory=dict)


JobOperation = Annotated[SetOperation | ActionOperation, Field(discriminator="kind")]


class JobTargetSpec(_Strict):
    """A query (resolved when the job starts, or each daily run starts, and stored) or a device list."""

    query: str | None = Field(default=None, max_length=4096)
    devices: list[Annotated[str, Field(pattern=DEVICE_REF_PATTERN)]] | None = Field(
        default=None, max_length=100_000, description="<vendor>/<device>"
    )

    @model_validator(mode="after")
    def _one_of(self) -> JobTargetSpec:
        if (self.query is None) == (self.devices is None):
            raise ValueError("target takes exactly one of query and devices")
        if self.devices is not None and not self.devices:
            raise ValueError("target.devices is empty")
        return self


class Rollout(_Strict):
    max_per_second: float = Field(default=10.0, gt=0, le=10_000, description="commands sent per second, at most")
    max_in_flight: int = Field(default=50, ge=1, le=10_000, description="executions awaiting their answer, at most")


class AbortCriteria(_Strict):
    """Stop when failures (FAILED, TIMED_OUT, REJECTED) exceed ``failure_percent`` of the finished
    executions, once at least ``min_executions`` have finished."""

    failure_percent: float = Field(ge=0, lt=100)
    min_executions: int = Field(default=1, ge=1)


class AtSchedule(_Strict):
    at: AwareDatetime


class DailySchedule(_Strict):
    daily: str = Field(description="HH:MM, local time in tz")
    tz: str = Field(default="UTC", description="an IANA time zone, e.g. Europe/Berlin")

    @field_validator("daily")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("daily takes HH:MM (00:00 to 23:59)")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:64]!r}") from None
        return value


Schedule = AtSchedule | DailySchedule


class JobSpec(_Strict):
    name: str | None = Field(default=None, max_length=200)
    target: JobTargetSpec
    operation: JobOperation
    rollout: Rollout = Field(default_factory=Rollout)
    abort: AbortCriteria | None = None
    execution_timeout: float = Field(
        default=60.0, gt=0, le=86_400, description="seconds; each command's expires_in and Message Expiry Interval"
    )
    schedule: Schedule | None = Field(default=None, description="null: now")


class JobCreateRequest(JobSpec):
    """``{base}/fleet/request/job_create``: a job spec; ``dry_run`` answers the target set only."""

    transaction: str | None = Field(default=None, pattern=TRANSACTION_PATTERN)
    dry_run: bool = False


class JobRequest(_Envelope):
    """``job_show``, ``job_pause``, ``job_resume``, ``job_cancel``."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)


class JobListRequest(_Envelope):
    status: JobStatus | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class JobTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None
    devices: int = Field(description="devices in the resolved target (0 until resolved)")


class JobDocument(BaseModel):
    """Retained on ``{base}/fleet/jobs/{job_id}`` (an empty retained payload once deleted)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None
    status: JobStatus
    paused: bool
    operation: JobOperation
    target: JobTarget
    rollout: Rollout
    abort: AbortCriteria | None
    execution_timeout: float
    schedule: Schedule | None
    total: int
    counts: dict[ExecutionStatus, int]
    rate: float = Field(description="executions finished per second, recent")
    estimated_end: datetime | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    run: int = Field(default=0, description="1 for the first run; a daily job counts its runs")
    next_run_at: datetime | None = Field(default=None, description="when a SCHEDULED job starts")
    reason: str | None = Field(default=None, description="why it was aborted or canceled")


class JobList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobDocument]


class DryRun(BaseModel):
    """``data`` of a ``job_create`` with ``dry_run``: the target set, nothing created."""

    model_config = ConfigDict(extra="forbid")

    total: int
    devices: list[str] = Field(description="<vendor>/<device>, at most 1,000 listed")
    skipped: int = Field(description="already in the target state now")


class JobEvent(BaseModel):
    """Not retained, on ``{base}/fleet/jobs/{job_id}/event``: a job's or an execution's transition."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["job", "execution"]
    at: datetime
    job_id: str
    run: int
    # a plain str: a job moves between JobStatus values, an execution between ExecutionStatus values
    from_: str | None = Field(alias="from", serialization_alias="from")
    to: str
    vendor: str | None = None
    device: str | None = None
    transaction: str | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None


# -- zones ------------------------------------------------------------------------------------------

Position = Annotated[list[float], Field(min_length=2, max_length=3, description="[longitude, latitude]")]
Ring = Annotated[list[Position], Field(min_length=4, description="closed: the first position again last")]


class PolygonGeometry(_Strict):
    type: Literal["Polygon"]
    coordinates: list[Ring] = Field(min_length=1, description="outer ring, then holes")


class MultiPolygonGeometry(_Strict):
    type: Literal["MultiPolygon"]
    coordinates: list[Annotated[list[Ring], Field(min_length=1)]] = Field(min_length=1)


class PointGeometry(_Strict):
    """A circle: GeoJSON has none, so a Point with ``radius_m`` (published to GBFS as a polygon)."""

    type: Literal["Point"]
    coordinates: Position
    radius_m: float = Field(gt=0, le=1_000_000)


ZoneGeometry = Annotated[PolygonGeometry | MultiPolygonGeometry | PointGeometry, Field(discriminator="type")]


class ZoneRule(StrEnum):
    #: a device found UNLOCKED inside, with no command of its own behind it, is sent a lock command
    KEEP_LOCKED = "keep_locked"
    #: GBFS: rides may not end here
    NO_PARKING = "no_parking"
    #: GBFS: rides may not start, end or pass through here
    NO_RIDE = "no_ride"


class ZoneDocument(_Strict):
    """Retained on ``{base}/fleet/zones/{zone_id}``."""

    id: str = Field(pattern=ZONE_ID_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    geometry: ZoneGeometry
    rules: list[ZoneRule] = Field(default_factory=list)
    maximum_speed_kph: int | None = Field(default=None, ge=0, le=300, description="GBFS speed limit inside")


class ZonePutRequest(ZoneDocument):
    """``{base}/fleet/request/zone_put``: create or replace a zone."""

    transaction: str | None = Field(default=None, pattern=TRANSACTION_PATTERN)


class ZoneRequest(_Envelope):
    """``zone_delete``."""

    zone_id: str = Field(pattern=ZONE_ID_PATTERN)


class ZoneListRequest(_Envelope):
    """``zone_list`` (may be empty)."""


class ZoneList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zones: list[ZoneDocument]
    members: dict[str, int] = Field(description="devices inside, per zone")


class ZoneEvent(BaseModel):
    """Not retained, on ``{base}/fleet/zones/{zone_id}/event``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["entered", "left"]
    at: datetime
    vendor: str
    device: str
    zone: str


# -- topics -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetTopics:
    base: str

    @property
    def root(self) -> str:
        return f"{self.base}/fleet"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def requests(self) -> str:
        return f"{self.root}/request/+"

    def request(self, op: str) -> str:
        return f"{self.root}/request/{op}"

    def response(self, op: str) -> str:
        return f"{self.root}/response/{op}"

    def job(self, job_id: str) -> str:
        return f"{self.root}/jobs/{job_id}"

    def job_event(self, job_id: str) -> str:
        return f"{self.root}/jobs/{job_id}/event"

    def zone(self, zone_id: str) -> str:
        return f"{self.root}/zones/{zone_id}"

    def zone_event(self, zone_id: str) -> str:
        return f"{self.root}/zones/{zone_id}/event"

    def op_of(self, topic: str) -> str | None:
        """The op of a request topic, or None."""
        prefix = f"{self.root}/request/"
        return topic[len(prefix) :] if topic.startswith(prefix) and "/" not in topic[len(prefix) :] else None
