"""An adapter with a large fleet and no vendor behind it, for the fleet-size benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel

from twin.adapter import Adapter, CommandContext, DeviceInfo, ExecuteResult, ReportedPatch, lock_state


class FleetSettings(BaseModel):
    devices: int = 100_000


class FleetAdapter(Adapter[FleetSettings]):
    vendor: ClassVar[str] = "fleet"
    settings_model = FleetSettings

    def __init__(self, *, settings: FleetSettings) -> None:
        super().__init__(settings=settings)
        self.count = settings.devices

    async def list_devices(self) -> Sequence[DeviceInfo]:
        return [DeviceInfo(id=f"dev{i:06d}", capabilities=frozenset({"lock", "battery"})) for i in range(self.count)]

    async def read_status(self, device_id: str) -> ReportedPatch:
        return ReportedPatch(values={"lock": lock_state(locked=True), "online": True}, observed_at=datetime.now(UTC))

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        return ExecuteResult()
