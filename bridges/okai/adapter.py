"""The OKAI adapter: scooters (by IMEI) <-> twins.

State map (vendor ``/scooter/query/status`` -> reported values; units in README.md):

- ``lock`` <- ``lockStatus`` (``lock_field``): 1 LOCKED, 0 UNLOCKED, anything else UNKNOWN
- ``online`` <- ``online``, and False whenever the vendor answers "device offline"
- ``battery`` <- ``batteryPercent`` (percent, clamped to 0..100)
- ``latitude``/``longitude`` <- ``latitude``/``longitude`` (degrees; 0,0 means no fix and is dropped)
- ``speed`` <- ``speed`` (km/h as the vendor gives it)
- ``total_distance_m``/``remaining_distance_m`` <- ``totalMile``/``remainMile`` x metres per
  ``distance_unit`` (default km)

``lock()`` only sends ``switchLock`` with ``expireTime`` = the command's remaining lifetime; the
runtime confirms it from status reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridges.okai.client import OkaiClient
from bridges.okai.models import ScooterLocation, ScooterStatus
from bridges.okai.settings import OkaiSettings
from contracts.errors import ErrorCode
from contracts.messages import LockState
from twin.adapter import (
    ActionSpec,
    Adapter,
    BridgeSink,
    CommandContext,
    DeviceInfo,
    ExecuteResult,
    ReportedPatch,
    SimulatorKit,
    VendorError,
)

__all__ = ["OkaiAdapter"]

MODEL = "OKAI scooter"
CAPABILITIES = frozenset({"lock", "location", "battery"})


class NoArguments(BaseModel):
    """Actions of this vendor take no arguments (envelope keys are ignored)."""

    model_config = ConfigDict(extra="ignore")


class OkaiAdapter(Adapter[OkaiSettings]):
    vendor: ClassVar[str] = "okai"
    settings_model: ClassVar[type[BaseModel]] = OkaiSettings

    def __init__(self, *, settings: OkaiSettings) -> None:
        super().__init__(settings=settings)
        self._client: OkaiClient | None = None
        self._sink: BridgeSink | None = None

    @property
    def client(self) -> OkaiClient:
        if self._client is None:
            raise RuntimeError("OkaiAdapter.start() was not called")
        return self._client

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit:
        """The simulated OKAI cloud with ``devices`` scooters and demo-only keys (signing on)."""
        from bridges.okai.simulator import DEMO_SIGN_KEY, DEMO_USER_KEY, OkaiSimulator

        user_key, sign_key = DEMO_USER_KEY, DEMO_SIGN_KEY
        sim = OkaiSimulator(user_key=user_key, sign_key=sign_key, devices=devices, record_calls=False)

        def settings(base_url: str) -> dict[str, Any]:
            return {
                "user_key": user_key,
                "sign_key": sign_key,
                "base_url": base_url.rstrip("/") + sim.base_path,
                "devices": sim.fleet.imeis,
                "poll_interval": 30.0,
            }

        return SimulatorKit(app=sim.app, settings=settings, device_ids=sim.fleet.imeis, limits=sim.limits)

    async def start(self, sink: BridgeSink) -> None:
        client = OkaiClient(settings=self.settings)
        await client.open()
        self._client = client
        self._sink = sink

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def list_devices(self) -> Sequence[DeviceInfo]:
        interval = self.settings.poll_interval
        return [
            DeviceInfo(id=imei, model=MODEL, capabilities=CAPABILITIES, poll_interval=interval)
            for imei in self.settings.devices
        ]

    def _imei(self, device_id: str) -> str:
        if device_id not in self.settings.devices:
            raise VendorError(ErrorCode.UNKNOWN_DEVICE, f"{device_id} is not a configured OKAI scooter")
        return device_id

    async def read_status(self, device_id: str) -> ReportedPatch:
        imei = self._imei(device_id)
        try:
            status = await self.client.status(imei)
        except VendorError as exc:
            if exc.info.code is ErrorCode.DEVICE_OFFLINE:
                return _offline()
            raise
        return self.status_patch(status)

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        imei = self._imei(device_id)
        expire_time = max(1, math.floor(ctx.remaining))
        try:
            await self.client.switch_lock(imei, operate="lock" if locked else "unlock", expire_time=expire_time)
        except VendorError as exc:
            if exc.info.code is ErrorCode.DEVICE_OFFLINE and self._sink is not None:
                # the vendor says so: publish availability now, the runtime retries the command
                await self._sink.report(device_id, _offline(), source="command")
            raise
        return ExecuteResult()

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            "get_status": ActionSpec(
                name="get_status",
                arguments=NoArguments,
                handler=self._get_status,
                description="read the scooter's status now (lock, battery, position, speed, distances)",
                idempotent=True,
            ),
            "get_location": ActionSpec(
                name="get_location",
                arguments=NoArguments,
                handler=self._get_location,
                description="read the scooter's position now",
                idempotent=True,
            ),
        }

    async def _get_status(self, device_id: str, arguments: Any, ctx: CommandContext) -> ExecuteResult:
        patch = self.status_patch(await self.client.status(self._imei(device_id)))
        data = {key: _json(value) for key, value in patch.values.items()}
        if patch.observed_at is not None:
            data["observed_at"] = patch.observed_at.isoformat()
        return ExecuteResult(data=data, reported=patch)

    async def _get_location(self, device_id: str, arguments: Any, ctx: CommandContext) -> ExecuteResult:
        patch = location_patch(await self.client.location(self._imei(device_id)))
        data: dict[str, Any] = dict(patch.values)
        if patch.observed_at is not None:
            data["observed_at"] = patch.observed_at.isoformat()
        return ExecuteResult(data=data, reported=patch if patch.values else None)

    def _lock_state(self, status: ScooterStatus) -> LockState:
        """The configured lock field (``lock_field``, ``locked_values``, ``unlocked_values``)."""
        settings = self.settings
        raw = status.model_dump().get(settings.lock_field)
        if raw is None or isinstance(raw, dict | list):
            return LockState.UNKNOWN
        if raw in settings.locked_values:
            return LockState.LOCKED
        if raw in settings.unlocked_values:
            return LockState.UNLOCKED
        return LockState.UNKNOWN

    def status_patch(self, status: ScooterStatus) -> ReportedPatch:
        """Vendor status -> twin values in twin units."""
        per_unit = self.settings.metres_per_unit
        values: dict[str, Any] = {"lock": self._lock_state(status)}
        if status.online is not None:
            values["online"] = status.online
        if status.batteryPercent is not None:
            values["battery"] = min(100.0, max(0.0, float(status.batteryPercent)))
        values.update(_position(status.latitude, status.longitude))
        if status.speed is not None:
            values["speed"] = float(status.speed)
        if status.totalMile is not None:
            values["total_distance_m"] = round(status.totalMile * per_unit)
        if status.remainMile is not None:
            values["remaining_distance_m"] = round(status.remainMile * per_unit)
        # connectivity is the cloud's present knowledge; the rest is as old as the scooter's last report
        online_now = {"online": datetime.now(UTC)} if "online" in values else {}
        return ReportedPatch(values=values, observed_at=_epoch_ms(status.updateTime), field_observed_at=online_now)


def _offline() -> ReportedPatch:
    return ReportedPatch(values={"online": False}, observed_at=datetime.now(UTC))


def location_patch(location: ScooterLocation) -> ReportedPatch:
    return ReportedPatch(
        values=_position(location.latitude, location.longitude), observed_at=_epoch_ms(location.gpsTime)
    )


def _position(latitude: float | None, longitude: float | None) -> dict[str, float]:
    """Both coordinates or none; (0, 0) is a scooter without a GPS fix, not a position."""
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):
        return {}
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return {}
    return {"latitude": latitude, "longitude": longitude}


def _epoch_ms(value: int | None) -> datetime | None:
    if value is None or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


def _json(value: Any) -> Any:
    return value.value if isinstance(value, LockState) else value
