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
    ActionSpec,
    Adapter,
    BridgeSink,
    CommandContext,
    DeviceInfo,
    ExecuteResult,
    ReportedPatch,
    VendorError,
    lock_state,
)


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


class FakeAdapter(Adapter):
    vendor: ClassVar[str] = "fake"
    settings_model = FakeSettings
    default_expiry = 5.0
    max_expiry = 60.0
    confirm_interval = 0.05
    confirm_max_interval = 0.2
    secret_fields = frozenset({"secret_key"})

    def __init__(self, *, settings: FakeSettings | None = None) -> None:
        super().__init__(settings=settings or FakeSettings())
        self.locks: dict[str, FakeLock] = {d: FakeLock() for d in self.settings.devices}  # type: ignore[attr-defined]
        self.sink: BridgeSink | None = None
        self.calls: list[tuple[str, str]] = []

    async def start(self, sink: BridgeSink) -> None:
        self.sink = sink

    async def list_devices(self) -> Sequence[DeviceInfo]:
        return [DeviceInfo(id=d, name=f"Fake {d}", capabilities=frozenset({"lock", "find"})) for d in self.locks]

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
        self._device(device_id)
        return ExecuteResult(data={"beeped": True, "volume": args.volume})

    async def _secret(self, device_id: str, args: NoArgs, ctx: CommandContext) -> ExecuteResult:
        self.calls.append((device_id, "get_secret_key"))
        return ExecuteResult(data={"secret_key": "K3Y-" + device_id})

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            "find": ActionSpec(name="find", arguments=FindArgs, handler=self._find, capability="find"),
            "get_secret_key": ActionSpec(name="get_secret_key", arguments=NoArgs, handler=self._secret, sensitive=True),
        }
