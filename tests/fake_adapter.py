"""A small in-memory vendor for the engine's tests, written against the adapter interface only."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

import anyio
from pydantic import BaseModel, Field

from contracts.errors import ErrorCode
from twin.adapter import (
    LOCK_FIELD,
    ActionSpec,
    Adapter,
    BridgeSink,
    CommandContext,
    DesiredField,
    DeviceInfo,
    ExecuteResult,
    PlannedOperation,
    ReportedPatch,
    VendorError,
    lock_state,
)


def mask(code: str) -> str:
    return "****" + code[-4:]


class FakeSettings(BaseModel):
    devices: list[str] = ["d1", "d2"]


@dataclass
class FakeLock:
    locked: bool | None = True
    online: bool = True
    battery: int = 80
    bolt_seconds: float = 0.05
    moves: bool = True  # False: accepts commands and never moves
    target: bool | None = None
    move_at: float = 0.0
    errors: list[VendorError] = field(default_factory=list)
    hang: bool = False
    position: tuple[float, float] | None = None
    lock_calls: int = 0
    reads: int = 0

    def settle(self) -> None:
        if self.target is not None and time.monotonic() >= self.move_at:
            self.locked, self.target = self.target, None


class FindArgs(BaseModel):
    volume: int = Field(default=2, ge=1, le=3)


class NoArgs(BaseModel):
    pass


#: what ``locktwin run`` is given to run it (``tests`` is on the path of a test's bridge process)
TARGET = "tests.fake_adapter:FakeAdapter"


class FakeAdapter(Adapter[FakeSettings]):
    vendor: ClassVar[str] = "fake"
    settings_model = FakeSettings
    default_expiry = 5.0
    max_expiry = 60.0
    confirm_interval = 0.05
    confirm_max_interval = 0.2
    secret_fields = frozenset({"secret_key"})

    def __init__(self, *, settings: FakeSettings | None = None) -> None:
        super().__init__(settings=settings or FakeSettings())
        self.locks: dict[str, FakeLock] = {d: FakeLock() for d in self.settings.devices}
        self.sink: BridgeSink | None = None
        self.calls: list[tuple[str, str]] = []
        self.codes: dict[str, dict[str, str]] = {}

    async def start(self, sink: BridgeSink) -> None:
        self.sink = sink

    async def list_devices(self) -> Sequence[DeviceInfo]:
        caps = frozenset({"lock", "find", "codes"})
        return [DeviceInfo(id=d, name=f"Fake {d}", capabilities=caps) for d in self.locks]

    def _device(self, device_id: str) -> FakeLock:
        dev = self.locks[device_id]
        if dev.errors:
            raise dev.errors.pop(0)
        if not dev.online:
            raise VendorError(ErrorCode.DEVICE_OFFLINE, "device offline", vendor_code=2001)
        return dev

    async def read_status(self, device_id: str) -> ReportedPatch:
        dev = self.locks[device_id]
        dev.reads += 1
        if not dev.online:
            raise VendorError(ErrorCode.DEVICE_OFFLINE, "device offline", vendor_code=2001)
        dev.settle()
        values: dict[str, object] = {
            "lock": lock_state(locked=dev.locked),
            "online": dev.online,
            "battery": dev.battery,
        }
        if dev.position is not None:
            values["latitude"], values["longitude"] = dev.position
        if device_id in self.codes:
            values["codes"] = {mask(k): v for k, v in self.codes[device_id].items()}
        return ReportedPatch(values=values, observed_at=datetime.now(UTC))

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        self.calls.append((device_id, "lock" if locked else "unlock"))
        dev = self._device(device_id)
        dev.lock_calls += 1
        if dev.hang:
            await anyio.sleep_forever()
        if dev.moves:
            dev.target, dev.move_at = locked, time.monotonic() + dev.bolt_seconds
        return ExecuteResult()

    async def _find(self, device_id: str, args: FindArgs, ctx: CommandContext) -> ExecuteResult:
        self.calls.append((device_id, "find"))
        if self._device(device_id).hang:
            await anyio.sleep_forever()
        return ExecuteResult(data={"beeped": True, "volume": args.volume})

    async def _secret(self, device_id: str, args: NoArgs, ctx: CommandContext) -> ExecuteResult:
        self.calls.append((device_id, "get_secret_key"))
        return ExecuteResult(data={"secret_key": "K3Y-" + device_id})

    # -- a planned desired field: named access codes, reconciled one vendor call per code ----------
    def desired_fields(self) -> Mapping[str, DesiredField]:
        return {
            "lock": LOCK_FIELD,
            "codes": DesiredField(
                name="codes",
                type=dict[str, str],
                capability="codes",
                plan=self._plan_codes,
                redact=lambda codes: {mask(k): v for k, v in codes.items()},
                confirmed=lambda value, reported: reported.get("codes") == {mask(k): v for k, v in value.items()},
            ),
        }

    async def _plan_codes(self, device_id: str, desired: dict[str, str], ctx: CommandContext) -> list[PlannedOperation]:
        current = self.codes.setdefault(device_id, {})
        ops = [
            PlannedOperation(name="remove", label=mask(k), run=self._op(device_id, k, None))
            for k in current
            if k not in desired
        ]
        ops += [
            PlannedOperation(name="put", label=mask(k), run=self._op(device_id, k, v))
            for k, v in desired.items()
            if current.get(k) != v
        ]
        return ops

    def _op(self, device_id: str, key: str, value: str | None):  # type: ignore[no-untyped-def]
        async def run(ctx: CommandContext) -> ExecuteResult:
            self.calls.append((device_id, f"code:{key}"))
            dev = self._device(device_id)
            if dev.hang:
                await anyio.sleep_forever()
            if value is None:
                self.codes[device_id].pop(key, None)
            else:
                self.codes[device_id][key] = value
            return ExecuteResult()

        return run

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            "find": ActionSpec(name="find", arguments=FindArgs, handler=self._find, capability="find"),
            "get_secret_key": ActionSpec(name="get_secret_key", arguments=NoArgs, handler=self._secret, sensitive=True),
        }
