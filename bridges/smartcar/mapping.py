"""Smartcar answers -> the twin's reported values (field names and units of the twin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twin.adapter import lock_state

from .models import Battery, Location, Odometer, OpeningStatus, SecurityStatus

__all__ = ["MILE", "battery_values", "location_values", "odometer_values", "security_values"]

MILE = 1609.344
KILOMETRE = 1000.0


def any_open(openings: Sequence[OpeningStatus]) -> bool | None:
    """True if any is open, False if all are known closed, None when Smartcar does not know."""
    if any(o.status == "OPEN" for o in openings):
        return True
    if openings and all(o.status == "CLOSED" for o in openings):
        return False
    return None


def security_values(status: SecurityStatus) -> dict[str, Any]:
    values: dict[str, Any] = {"lock": lock_state(locked=status.is_locked), "online": True}
    groups = {
        "doors_open": status.doors,
        "windows_open": status.windows,
        "sunroof_open": status.sunroof,
        "storage_open": status.storage,
        "charging_port_open": status.charging_port,
    }
    for key, openings in groups.items():
        if openings:
            values[key] = any_open(openings)
    return values


def _metres(distance: float, unit_system: str) -> float:
    return round(distance * (MILE if unit_system == "imperial" else KILOMETRE), 1)


def battery_values(battery: Battery, unit_system: str) -> dict[str, Any]:
    values: dict[str, Any] = {"battery": round(battery.percent_remaining * 100, 1)}
    if battery.range is not None:
        values["range_m"] = _metres(battery.range, unit_system)
    return values


def location_values(location: Location) -> dict[str, Any]:
    return {"latitude": location.latitude, "longitude": location.longitude}


def odometer_values(odometer: Odometer, unit_system: str) -> dict[str, Any]:
    return {"odometer_m": _metres(odometer.distance, unit_system)}
