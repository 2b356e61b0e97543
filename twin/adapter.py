"""The seam between the generic runtime and one vendor's cloud.

An adapter knows how to talk to one vendor: list its devices, read a device's status as a reported
patch, execute a desired change (lock/unlock) or a vendor action, and optionally receive pushes. It
knows nothing about MQTT, the store, retries, expiry or confirmation: the runtime does all of that.

Errors are translated at this boundary: an adapter raises :class:`VendorError` carrying a normalized
:class:`~contracts.errors.ErrorCode` (and the vendor's own code and message), never an HTTP or
library exception. Anything else an adapter raises is treated as ``VENDOR_ERROR``.

Exception tree::

    VendorError            a failed vendor operation, with its normalized ErrorInfo
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import DesiredLock, EventType, LockState

if TYPE_CHECKING:
    from twin.extensions import Extension

__all__ = [
    "LOCK_FIELD",
    "ActionHandler",
    "ActionSpec",
    "Adapter",
    "BridgeSink",
    "CommandContext",
    "DesiredField",
    "DeviceInfo",
    "ExecuteResult",
    "NoArguments",
    "PlannedOperation",
    "Planner",
    "ReportedPatch",
    "SimulatorKit",
    "VendorError",
    "lock_state",
]


#: the codes that say the vendor itself is out or limiting, not one device
VENDOR_WIDE = frozenset({ErrorCode.VENDOR_UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.QUOTA_EXHAUSTED})


class VendorError(Exception):
    """A vendor operation failed; ``info`` is what users see on the response topic."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        vendor_code: str | int | None = None,
        vendor_message: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        maybe_executed: bool = False,
        vendor_wide: bool | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        #: the request may have reached the vendor without an answer coming back (a read timeout):
        #: the vendor may still act on it, so the runtime never calls such a command "expired"
        #: (which promises it was never sent) and never repeats a non-idempotent one.
        self.maybe_executed = maybe_executed
        #: the vendor fails as a whole (it is out, or limits the whole account), not for one device:
        #: background reads pause (twin.backoff). By default the code decides; an adapter says
        #: False for a limit of one device (Smartcar's per-vehicle rate limit).
        self.vendor_wide = code in VENDOR_WIDE if vendor_wide is None else vendor_wide
        self.info = ErrorInfo.of(
            code,
            message,
            vendor_code=vendor_code,
            vendor_message=vendor_message,
            retryable=retryable,
            retry_after=retry_after,
        )


class NoArguments(BaseModel):
    """The arguments of an action that takes none (unknown keys are ignored)."""


class DeviceInfo(BaseModel):
    """One device an adapter serves."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    name: str | None = None
    model: str | None = None
    capabilities: frozenset[str] = frozenset({"lock"})
    #: seconds between status reads when nothing else happens; None: never poll (push only)
    poll_interval: float | None = None


class ReportedPatch(BaseModel):
    """Values the vendor reported for one device, with the vendor's timestamps.

    ``values`` uses the twin's field names and units (``lock`` as a :class:`LockState`, ``online``,
    ``battery`` in percent, ``latitude``/``longitude``, distances in metres...). A value whose
    ``observed_at`` is older than the one already stored is ignored, so a late push never
    overwrites newer state.
    """

    values: dict[str, Any]
    observed_at: datetime | None = None
    field_observed_at: dict[str, datetime] = Field(default_factory=dict)

    def observed(self, name: str) -> datetime | None:
        return self.field_observed_at.get(name, self.observed_at)


@dataclass(frozen=True, kw_only=True)
class CommandContext:
    """What an adapter may know about the command it is executing."""

    command_id: str
    transaction: str | None
    device_id: str
    name: str
    expires_at: datetime
    attempt: int

    @property
    def remaining(self) -> float:
        """Seconds left before the command expires (a vendor may pass this on to the device)."""
        return max(0.0, (self.expires_at - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, kw_only=True)
class ExecuteResult:
    """A vendor accepted an operation.

    For a desired field, acceptance is not success: the runtime confirms it from the reported
    state. For an action, ``data`` is the final answer. ``reported`` lets an adapter hand over state
    it learned from the same call.
    """

    data: dict[str, Any] | None = None
    reported: ReportedPatch | None = None


ActionHandler = Callable[[str, Any, CommandContext], Awaitable[ExecuteResult]]


def _unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True, kw_only=True)
class ActionSpec:
    """A vendor operation that is not state, served on ``/request/{name}``.

    ``arguments`` validates the payload before any vendor call (ranges from the vendor's document).
    ``idempotent`` actions may be sent again after a crash left their outcome unknown; others are
    never repeated. ``sensitive`` answers (a bluetooth key) are published once, never stored.
    ``redact`` is what of the arguments (as JSON) may be published and journaled, and all that is
    kept of them once the action ended (a card id masked); applied to its own output it must change
    nothing.
    """

    name: str
    arguments: type[BaseModel]
    handler: ActionHandler
    description: str = ""
    idempotent: bool = False
    sensitive: bool = False
    capability: str | None = None
    redact: Callable[[Any], Any] = _unchanged

    @property
    def carries_secrets(self) -> bool:
        """Its request or answer holds something not everyone may read (a key, a card id)."""
        return self.sensitive or self.redact is not _unchanged


@dataclass(frozen=True, kw_only=True)
class PlannedOperation:
    """One vendor call of a desired field's plan (a card issued, a validity window changed...).

    The runtime runs each as a command of its own (lifecycle, events, audit) under the ``/set``
    command. ``label`` names what it acts on and is published, so it must be safe (masked).
    """

    name: str
    label: str
    run: Callable[[CommandContext], Awaitable[ExecuteResult]]


#: plan(device_id, desired value, context) -> the operations that make the device match, given now
Planner = Callable[[str, Any, CommandContext], Awaitable[Sequence[PlannedOperation]]]


@dataclass(frozen=True, kw_only=True)
class DesiredField:
    """A field users may set on ``/set``. ``lock`` is the common one; vendors may add more.

    A field with a ``plan`` (door-lock cards) is reconciled in several vendor calls: the runtime
    asks for the plan when the command runs (so it is made against the vendor's state of that
    moment, and made again after a retry or a restart), and runs each planned operation as a
    command of its own. ``redact`` is what of a value may be published and journaled, and all that
    is kept of it once its command ended (the store keeps the whole value only while it runs, since
    the plan is made again after a restart); applied to its own output it must change nothing.
    """

    name: str
    type: Any
    capability: str
    idempotent: bool = True
    #: a value that holds as reported once this returns True
    confirmed: Callable[[Any, Mapping[str, Any]], bool] = field(
        default=lambda value, reported: reported.get("lock") == value
    )
    #: why a reported state proves the value will not be reached (the command then fails), or None
    refuted: Callable[[Any, Mapping[str, Any]], str | None] = field(default=lambda value, reported: None)
    plan: Planner | None = None
    redact: Callable[[Any], Any] = _unchanged


def _jammed(value: Any, reported: Mapping[str, Any]) -> str | None:
    return "the lock is jammed" if reported.get("lock") == LockState.JAMMED else None


LOCK_FIELD = DesiredField(name="lock", type=DesiredLock, capability="lock", refuted=_jammed)


@dataclass(frozen=True, kw_only=True)
class SimulatorKit:
    """A vendor's simulator as the demo, ``locktwin simulate``, compose and the benchmarks run it.

    ``app`` is the simulator's ASGI app; ``settings(base_url)`` is the adapter's settings table that
    points a bridge at it (with the simulator's demo-only credentials); ``limits`` the vendor
    account's simulated limits (a :class:`twin.simlimits.VendorLimits`, off until configured).
    """

    app: Any
    settings: Callable[[str], dict[str, Any]]
    device_ids: Sequence[str]
    limits: Any = None


class BridgeSink(Protocol):
    """What the runtime offers an adapter for pushes, vendor events and its own files."""

    @property
    def data_dir(self) -> Path:
        """A folder of this adapter's own (e.g. a token store), next to the twin store."""
        ...

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        """Store a reported patch; returns False for an unknown device. Returns after the write."""
        ...

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None: ...


SettingsT = TypeVar("SettingsT", bound=BaseModel)


class Adapter(ABC, Generic[SettingsT]):
    """Base class of a vendor adapter, typed by its settings model. Constructors assign; ``start`` does I/O."""

    vendor: ClassVar[str]
    #: the adapter's configuration model (the ``[vendors.<name>]`` table plus LOCKTWIN_<NAME>_* env)
    settings_model: ClassVar[type[BaseModel]]
    default_expiry: ClassVar[float] = 30.0
    max_expiry: ClassVar[float] = 300.0
    #: vendor calls in flight at most (the adaptive limit's ceiling, ``max_in_flight`` in
    #: ``[bridges.<vendor>]`` overrides it) and where the limit starts before it learned anything
    max_in_flight: ClassVar[int] = 512
    initial_in_flight: ClassVar[int] = 16
    #: seconds a command must still have when its call starts, else it is not sent (it expires): a
    #: call takes time to reach the vendor, and one that arrives after the command's expiry acts on
    #: a stale command (measured: 18 ms on a loaded 2-core machine; a cloud is further away)
    send_margin: ClassVar[float] = 0.25
    #: first delay between confirmation reads after a vendor accepted a command; grows by 1.5x
    confirm_interval: ClassVar[float] = 1.0
    confirm_max_interval: ClassVar[float] = 10.0
    #: reported keys that must never reach a retained topic or the store
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    #: ``locktwin <vendor> <command>``: the vendor's own commands (see :meth:`cli`), for ``--help``
    cli_commands: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *, settings: SettingsT) -> None:
        self.settings: SettingsT = settings

    async def start(self, sink: BridgeSink) -> None:
        """Open connections, start push intake. Called once before any other call.

        ``start`` and ``stop`` are called from the same task, so a context entered here (an
        ``AsyncExitStack`` holding ``serve_asgi(...)``) may be closed in ``stop``.
        """

    async def stop(self) -> None:
        """Close what ``start`` opened."""

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit | None:
        """This vendor's simulator with ``devices`` simulated devices (None: it has none)."""
        return None

    @classmethod
    def cli(cls, argv: Sequence[str]) -> int:
        """``locktwin <vendor> ...``: vendor commands for operators (e.g. linking an account)."""
        print(f"{cls.vendor} has no commands of its own")  # noqa: T201
        return 2

    @abstractmethod
    async def list_devices(self) -> Sequence[DeviceInfo]: ...

    @abstractmethod
    async def read_status(self, device_id: str) -> ReportedPatch: ...

    async def set_desired(self, device_id: str, name: str, value: Any, ctx: CommandContext) -> ExecuteResult:
        """Ask the vendor to make ``name`` equal ``value``; the default handles ``lock``."""
        if name == "lock":
            return await self.lock(device_id, locked=value == DesiredLock.LOCKED, ctx=ctx)
        raise VendorError(ErrorCode.UNSUPPORTED, f"{self.vendor} cannot set {name!r}")

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        raise VendorError(ErrorCode.UNSUPPORTED, f"{self.vendor} cannot lock or unlock")

    def desired_fields(self) -> Mapping[str, DesiredField]:
        return {"lock": LOCK_FIELD}

    def extensions(self) -> Sequence[Extension]:
        """Capabilities of this vendor beside the command path (a push intake), started after
        :meth:`start` with the bridge's context (:mod:`twin.extensions`)."""
        return ()

    def actions(self) -> Mapping[str, ActionSpec]:
        return {}


def lock_state(*, locked: bool | None) -> LockState:
    """Map a vendor's boolean to the common lock state."""
    if locked is None:
        return LockState.UNKNOWN
    return LockState.LOCKED if locked else LockState.UNLOCKED
