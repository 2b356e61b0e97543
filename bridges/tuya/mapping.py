"""Tuya <-> twin: a door lock's data points as reported values, and a desired lock as a door operation.

State map (data point -> twin key):

- ``lock`` <- ``lock_motor_state`` (bool; which of true/false means locked is per device: firmware
  differs, ``lock_polarity``), ``JAMMED`` when ``alarm_lock`` says the bolt could not move, else
  ``UNKNOWN``;
- ``online`` <- the device's ``online``; ``last_alarm`` <- ``alarm_lock`` (None when empty);
- ``battery`` <- ``residual_electricity`` (0-100), else ``battery_state`` as a level;
- ``door_open`` <- ``door_opened`` (bool), else ``closed_opened`` (the sensor of other models).

Back: a desired ``LOCKED``/``UNLOCKED`` is ``password-free/door-operate`` with ``open`` false/true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridges.tuya.models import REMOTE_WITHOUT_PASSWORD, DeviceDetail, RemoteUnlock
from contracts.messages import LockState
from twin.adapter import lock_state

__all__ = ["BATTERY_LEVELS", "JAM_ALARMS", "door_operate_body", "remote_unlock_enabled", "status_values"]

#: ``battery_state`` when a lock has no ``residual_electricity``
BATTERY_LEVELS: Mapping[str, float] = {"high": 100.0, "medium": 50.0, "low": 20.0, "poweroff": 0.0}
#: ``alarm_lock`` values that mean the bolt could not move
JAM_ALARMS = frozenset({"tongue_bad"})


def status_values(detail: DeviceDetail, *, locked_when_true: bool) -> dict[str, Any]:
    """The twin's keys from one device's data points (see the module docstring)."""
    points = {item.code: item.value for item in detail.status}
    motor = points.get("lock_motor_state")
    alarm = points.get("alarm_lock") or None
    if alarm in JAM_ALARMS:
        lock = LockState.JAMMED
    elif isinstance(motor, bool):
        lock = lock_state(locked=motor == locked_when_true)
    else:
        lock = LockState.UNKNOWN
    values: dict[str, Any] = {"lock": lock, "online": detail.online, "last_alarm": alarm}
    battery = points.get("residual_electricity")
    if isinstance(battery, int | float) and not isinstance(battery, bool) and 0 <= battery <= 100:
        values["battery"] = float(battery)
    elif points.get("battery_state") in BATTERY_LEVELS:
        values["battery"] = BATTERY_LEVELS[points["battery_state"]]
    if isinstance(points.get("door_opened"), bool):
        values["door_open"] = points["door_opened"]
    elif points.get("closed_opened") in ("open", "closed"):
        values["door_open"] = points["closed_opened"] == "open"
    return values


def door_operate_body(ticket_id: str, *, locked: bool) -> dict[str, Any]:
    """The body of ``password-free/door-operate`` that makes the lock ``locked`` (``open`` unlocks)."""
    return {"ticket_id": ticket_id, "open": not locked}


def remote_unlock_enabled(raw: Any) -> bool:
    """Whether a ``door-lock/remote-unlocks`` answer lists remote unlock without password as open."""
    kinds = [RemoteUnlock.model_validate(item) for item in raw or []]
    return any(k.remote_unlock_type == REMOTE_WITHOUT_PASSWORD and k.open for k in kinds)
