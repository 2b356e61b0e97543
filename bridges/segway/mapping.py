"""Segway -> twin: reported values in the twin's names and units, and alert/fault events.

Units: ``odometer`` is metres already, ``remainingRange`` is 10 m units (1230 -> 12,300 m),
``powerPercent`` is percent, ``speed`` km/h. A ``0.0/0.0`` or ``invalid`` position is no position.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridges.segway.models import AlertPush, FaultPush, VehicleLocation, VehicleStatus, from_vendor_time
from twin.adapter import ReportedPatch, lock_state

__all__ = [
    "ALERTS_APPEARING",
    "ALERTS_DISAPPEARED",
    "LOCATION_KEYS",
    "SPEED_MODES",
    "alert_event",
    "fault_event",
    "location_patch",
    "merge",
    "status_patch",
]

SPEED_MODES: dict[int, str] = {1: "low", 2: "medium", 3: "high"}
ALERTS_APPEARING: dict[int, str] = {
    1: "illegal moving",
    2: "vehicle fell down when locked",
    3: "illegal dismantling",
    4: "vehicle fell down when unlocked",
    12: "low power",
}
ALERTS_DISAPPEARED: dict[int, str] = {
    1: "illegal moving",
    2: "vehicle fell down",
    3: "illegal dismantling",
    12: "low power",
}
LOCATION_KEYS = ("latitude", "longitude", "hdop", "satellites", "altitude")
#: 10 m units -> metres
RANGE_UNIT_M = 10


def _clamp_percent(value: float) -> float:
    return max(0.0, min(100.0, float(value)))


def status_patch(status: VehicleStatus) -> ReportedPatch:
    values: dict[str, Any] = {}
    if status.locked is not None:
        values["lock"] = lock_state(locked=status.locked)
    optional: dict[str, Any] = {
        "online": status.online,
        "battery": None if status.power_percent is None else _clamp_percent(status.power_percent),
        "charging": status.charging,
        "speed": status.speed,
        "speed_mode": None if status.speed_mode is None else SPEED_MODES.get(status.speed_mode, str(status.speed_mode)),
        "odometer_m": status.odometer,
        "remaining_range_m": None if status.remaining_range is None else status.remaining_range * RANGE_UNIT_M,
        "signal": status.network_signal,
    }
    values.update({k: v for k, v in optional.items() if v is not None})
    return ReportedPatch(values=values, observed_at=from_vendor_time(status.status_utc_time))


def location_patch(location: VehicleLocation) -> ReportedPatch | None:
    """The position as reported values, or None when the vehicle has no fix."""
    if not location.has_fix:
        return None
    values = {
        "latitude": location.latitude,
        "longitude": location.longitude,
        "hdop": location.hdop,
        "satellites": location.satellite_number,
        "altitude": location.altitude,
    }
    return ReportedPatch(
        values={k: v for k, v in values.items() if v is not None},
        observed_at=from_vendor_time(location.gps_utc_time),
    )


def merge(first: ReportedPatch, second: ReportedPatch | None) -> ReportedPatch:
    """One patch of both, each value keeping its own vendor timestamp."""
    if second is None:
        return first
    observed: dict[str, datetime] = {}
    for patch in (first, second):
        for name in patch.values:
            when = patch.observed(name)
            if when is not None:
                observed[name] = when
    return ReportedPatch(
        values={**first.values, **second.values},
        observed_at=first.observed_at or second.observed_at,
        field_observed_at=observed,
    )


def _status(flag: int) -> str:
    return "appearing" if flag == 0 else "disappeared"


def alert_event(push: AlertPush) -> dict[str, Any]:
    appearing = push.alert_status == 0
    meanings = ALERTS_APPEARING if appearing else ALERTS_DISAPPEARED
    when = from_vendor_time(push.status_utc_time)
    return {
        "code": push.code,
        "meaning": meanings.get(push.code, f"alert {push.code}"),
        "status": _status(push.alert_status),
        "observed_at": when.isoformat() if when else None,
    }


def fault_event(push: FaultPush) -> dict[str, Any]:
    when = from_vendor_time(push.status_utc_time)
    return {
        "code": push.code,
        "meaning": f"fault {push.code}",
        "status": _status(push.fault_status),
        "observed_at": when.isoformat() if when else None,
    }
