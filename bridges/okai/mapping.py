"""OKAI <-> twin: a scooter's status and position as reported values, a desired lock as ``switchLock``.

State map (vendor ``/scooter/query/status`` -> reported values; units in README.md):

- ``lock`` <- ``lockStatus`` (``lock_field``): 1 LOCKED, 0 UNLOCKED, anything else UNKNOWN
- ``online`` <- ``online``, and False whenever the vendor answers "device offline"
- ``battery`` <- ``batteryPercent`` (percent, clamped to 0..100)
- ``latitude``/``longitude`` <- ``latitude``/``longitude`` (degrees; 0,0 means no fix and is dropped)
- ``speed`` <- ``speed`` (km/h as the vendor gives it)
- ``total_distance_m``/``remaining_distance_m`` <- ``totalMile``/``remainMile`` x metres per
  ``distance_unit`` (default km)

Back: a desired ``LOCKED``/``UNLOCKED`` is ``switchLock`` with ``operate`` lock/unlock and
``expireTime`` the command's remaining lifetime in whole seconds (at least 1).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from bridges.okai.models import Operate, ScooterLocation, ScooterStatus
from bridges.okai.settings import OkaiSettings
from contracts.messages import LockState
from twin.adapter import ReportedPatch

__all__ = ["answer_data", "location_patch", "lock_state_of", "offline_patch", "status_patch", "switch_lock_arguments"]


def lock_state_of(status: ScooterStatus, settings: OkaiSettings) -> LockState:
    """The configured lock field (``lock_field``, ``locked_values``, ``unlocked_values``)."""
    raw = status.model_dump().get(settings.lock_field)
    if raw is None or isinstance(raw, dict | list):
        return LockState.UNKNOWN
    if raw in settings.locked_values:
        return LockState.LOCKED
    if raw in settings.unlocked_values:
        return LockState.UNLOCKED
    return LockState.UNKNOWN


def status_patch(status: ScooterStatus, settings: OkaiSettings) -> ReportedPatch:
    """Vendor status -> twin values in twin units."""
    per_unit = settings.metres_per_unit
    values: dict[str, Any] = {"lock": lock_state_of(status, settings)}
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


def location_patch(location: ScooterLocation) -> ReportedPatch:
    return ReportedPatch(
        values=_position(location.latitude, location.longitude), observed_at=_epoch_ms(location.gpsTime)
    )


def offline_patch() -> ReportedPatch:
    """What the vendor's "device offline" answer says of the scooter, now."""
    return ReportedPatch(values={"online": False}, observed_at=datetime.now(UTC))


def answer_data(patch: ReportedPatch) -> dict[str, Any]:
    """A read action's answer: the patch's values as JSON, with when they were observed."""
    data = {key: value.value if isinstance(value, LockState) else value for key, value in patch.values.items()}
    if patch.observed_at is not None:
        data["observed_at"] = patch.observed_at.isoformat()
    return data


def switch_lock_arguments(*, locked: bool, remaining: float) -> tuple[Operate, int]:
    """``operate`` and ``expireTime`` of a lock or unlock that may still run ``remaining`` seconds
    (a scooter that gets it later drops it)."""
    return ("lock" if locked else "unlock"), max(1, math.floor(remaining))


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
