"""The engine's fleet as extensions see it: read only (:class:`twin.extensions.FleetView`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twin.adapter import DeviceInfo
from twin.store import TwinRecord

if TYPE_CHECKING:
    from twin.engine import TwinEngine

__all__ = ["EngineFleet"]


class EngineFleet:
    def __init__(self, engine: TwinEngine) -> None:
        self._engine = engine

    def devices(self) -> Sequence[DeviceInfo]:
        return self._engine.out.devices

    def info(self, device: str) -> DeviceInfo | None:
        rt = self._engine.devices.get(device)
        return None if rt is None else rt.info

    def twin(self, device: str) -> TwinRecord | None:
        return self._engine.twins.get(device)

    def busy(self, device: str) -> bool:
        rt = self._engine.devices.get(device)
        return rt is not None and rt.current is not None

    def gone(self) -> Sequence[str]:
        return [device for device, twin in self._engine.twins.items() if not twin.present]

    def last_observed(self, device: str) -> float | None:
        rt = self._engine.devices.get(device)
        return None if rt is None else rt.observed
