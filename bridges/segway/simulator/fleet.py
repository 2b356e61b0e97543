"""Simulated Segway vehicles: state, physics driven by real time, and knobs for tests.

A vehicle's bolt takes ``bolt_seconds`` to move after a lock or unlock was accepted; a riding vehicle
moves, counts kilometres and drains its battery; anything can be forced (offline, riding, upgrading,
jammed, geofenced) and any 15xxx code can be injected for the next N calls.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fleet", "Vehicle"]

#: remaining range at 100 % battery, in Segway's 10 m units (60 km)
FULL_RANGE_10M = 6000
RIDING_SPEED_KMH = 18.0
#: battery percent used per kilometre ridden
DRAIN_PER_KM = 1.2
_METRES_PER_DEGREE = 111_320.0


@dataclass(kw_only=True)
class Vehicle:
    iot_code: str
    bolt_seconds: float = 0.3
    online: bool = True
    activated: bool = True
    locked: bool = True
    riding: bool = False
    #: lock while riding answers 15600 (the lock page) or 15997 (its newer variant)
    riding_code: int = 15600
    upgrading: bool = False
    jammed: bool = False
    geofence_denied: bool = False
    supports_intervals: bool = True
    has_fix: bool = True
    charging: bool = False
    battery: float = 80.0
    speed_mode: int = 2
    speed: float = 0.0
    odometer: float = 9000.0
    total_riding_secs: float = 110.0
    network_signal: int = 22
    lock_voltage: int = 342
    latitude: float = 52.370216
    longitude: float = 4.895168
    altitude: float = 10.1
    hdop: float = 1.38
    satellites: int = 6
    heading: float = 45.0
    bluetooth_key: str = field(default="abcd1234", repr=False)
    battery_cover_open: bool = False
    finds: int = 0
    #: the last value of each setting endpoint (switch, able-switch, ambient, sound, interval)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: extra seconds before this vehicle's answers
    latency: float = 0.0
    status_time: float = field(default_factory=time.time)
    gps_time: float = field(default_factory=time.time)
    #: bumped on every change of state, so the pusher knows what to send
    revision: int = field(default=0, init=False)
    _pending: tuple[bool, float] | None = field(default=None, init=False, repr=False)
    _injected: deque[int] = field(default_factory=deque, init=False, repr=False)
    _moved_at: float = field(default_factory=time.monotonic, init=False, repr=False)

    # ---- knobs ----------------------------------------------------------------------------------

    def inject(self, code: int, *, times: int = 1) -> None:
        """Answer ``code`` to the next ``times`` calls about this vehicle."""
        self._injected.extend([code] * times)

    def take_injected(self) -> int | None:
        return self._injected.popleft() if self._injected else None

    def go_offline(self) -> None:
        self.online = False
        self._changed()

    def go_online(self) -> None:
        self.online = True
        self._changed()

    def ride(self, *, speed: float = RIDING_SPEED_KMH) -> None:
        """A rider takes the vehicle: unlocked, moving."""
        self.settle()
        self.riding = True
        self.locked = False
        self._pending = None
        self.speed = speed
        self._moved_at = time.monotonic()
        self._changed()

    def park(self) -> None:
        self.settle()
        self.riding = False
        self.speed = 0.0
        self._changed()

    # ---- physics --------------------------------------------------------------------------------

    def command_lock(self, locked: bool) -> None:
        """An accepted lock/unlock: the bolt moves after ``bolt_seconds``."""
        if self.bolt_seconds <= 0:
            self._set_locked(locked)
        else:
            self._pending = (locked, time.monotonic() + self.bolt_seconds)

    @property
    def bolt_moving(self) -> bool:
        return self._pending is not None

    def settle(self) -> None:
        """Bring the vehicle up to now: finish a bolt that is due, move a riding vehicle."""
        now = time.monotonic()
        if self._pending is not None and now >= self._pending[1]:
            target, _ = self._pending
            self._pending = None
            self._set_locked(target)
        if self.riding and self.online:
            self._move(now - self._moved_at)
        self._moved_at = now

    def _set_locked(self, locked: bool) -> None:
        self.locked = locked
        if not locked:
            self.battery_cover_open = False
        self._changed()

    def _move(self, seconds: float) -> None:
        if seconds <= 0:
            return
        metres = self.speed / 3.6 * seconds
        rad = math.radians(self.heading)
        self.latitude += metres * math.cos(rad) / _METRES_PER_DEGREE
        self.longitude += metres * math.sin(rad) / (_METRES_PER_DEGREE * math.cos(math.radians(self.latitude)))
        self.odometer += metres
        self.total_riding_secs += seconds
        self.battery = max(0.0, self.battery - metres / 1000.0 * DRAIN_PER_KM)
        self.gps_time = time.time()
        self._changed()

    def _changed(self) -> None:
        self.status_time = time.time()
        self.revision += 1

    # ---- wire views -------------------------------------------------------------------------------

    @property
    def remaining_range(self) -> int:
        return round(self.battery / 100 * FULL_RANGE_10M)

    def status(self) -> dict[str, Any]:
        return {
            "iotCode": self.iot_code,
            "online": self.online,
            "locked": self.locked,
            "lockVoltage": self.lock_voltage,
            "networkSignal": self.network_signal,
            "charging": self.charging,
            "powerPercent": round(self.battery),
            "speedMode": self.speed_mode,
            "speed": round(self.speed),
            "odometer": round(self.odometer),
            # the status page's example spells it remainderRange
            "remainderRange": self.remaining_range,
            "totalRidingSecs": round(self.total_riding_secs),
            "statusUtcTime": int(self.status_time),
        }

    def location(self) -> dict[str, Any]:
        return {
            "iotCode": self.iot_code,
            "latitude": round(self.latitude, 6),
            "longitude": round(self.longitude, 6),
            "satelliteNumber": self.satellites,
            "hdop": self.hdop,
            "altitude": self.altitude,
            # the location page's example sends the time as text
            "gpsUtcTime": str(int(self.gps_time)),
        }

    def battery_info(self) -> dict[str, Any]:
        return {
            "iotCode": self.iot_code,
            "charging": self.charging,
            "vehiclePercent": round(self.battery),
            "batteryCount": 1,
            "drivingVoltage": 48,
            "currentPower": 260 if self.riding else 0,
            "iotPercent": 100,
            "iotVoltage": 412,
            "batteryData": [
                {
                    "batteryPort": 1,
                    "batteryPercent": round(self.battery),
                    "batteryVoltage": 48,
                    "cycleTimes": 23,
                    "temperatrue": 25,
                }
            ],
        }


class Fleet:
    """The simulated vehicles by IMEI."""

    def __init__(self, vehicles: Iterable[Vehicle]) -> None:
        self._vehicles = {v.iot_code: v for v in vehicles}

    @classmethod
    def generate(cls, count: int, *, bolt_seconds: float = 0.3, seed: int = 7) -> Fleet:
        rng = random.Random(seed)
        vehicles = []
        for n in range(count):
            vehicles.append(
                Vehicle(
                    iot_code=f"86147703{n:07d}",
                    bolt_seconds=bolt_seconds,
                    battery=float(rng.randint(20, 100)),
                    latitude=52.37 + rng.uniform(-0.05, 0.05),
                    longitude=4.89 + rng.uniform(-0.05, 0.05),
                    bluetooth_key="".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(8)),
                )
            )
        return cls(vehicles)

    def __getitem__(self, iot_code: str) -> Vehicle:
        return self._vehicles[iot_code]

    def get(self, iot_code: str) -> Vehicle | None:
        return self._vehicles.get(iot_code)

    def __iter__(self) -> Iterator[Vehicle]:
        return iter(list(self._vehicles.values()))

    def __len__(self) -> int:
        return len(self._vehicles)

    @property
    def ids(self) -> list[str]:
        return list(self._vehicles)

    def add(self, vehicle: Vehicle) -> Vehicle:
        self._vehicles[vehicle.iot_code] = vehicle
        return vehicle
