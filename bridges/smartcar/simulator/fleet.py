"""Simulated vehicles with physics driven by real time: a bolt that takes time, sleep, motion, limits."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from random import Random

__all__ = ["ERRORS", "Fleet", "InjectedError", "SimVehicle"]

MAKES = (("TESLA", "Model 3"), ("BMW", "i3"), ("FORD", "Mustang Mach-E"), ("VOLKSWAGEN", "ID.4"), ("AUDI", "e-tron"))


@dataclass(frozen=True)
class InjectedError:
    """One of Smartcar's error answers (status, type, code, resolution)."""

    status: int
    type: str
    code: str | None
    description: str
    resolution: str | None = None
    retry_after: float | None = None


#: named errors tests may inject with :meth:`Fleet.inject`
ERRORS: dict[str, InjectedError] = {
    "ASLEEP": InjectedError(409, "VEHICLE_STATE", "ASLEEP", "The vehicle is in a sleep state.", "RETRY_LATER"),
    "UNREACHABLE": InjectedError(
        409, "VEHICLE_STATE", "UNREACHABLE", "The vehicle is out of network coverage.", "RETRY_LATER"
    ),
    "IN_MOTION": InjectedError(409, "VEHICLE_STATE", "IN_MOTION", "The vehicle is in motion.", "RETRY_LATER"),
    "RATE_LIMIT": InjectedError(
        429,
        "RATE_LIMIT",
        "VEHICLE",
        "You have reached the throttling rate limit for this vehicle.",
        "RETRY_LATER",
        retry_after=1.0,
    ),
    "AUTHENTICATION": InjectedError(
        401,
        "AUTHENTICATION",
        None,
        "The authorization header is missing or malformed, or it contains "
        "invalid or expired authentication credentials.",
        "REAUTHENTICATE",
    ),
    "PERMISSION": InjectedError(
        403,
        "PERMISSION",
        None,
        "Your application has insufficient permissions to access the requested resource.",
        "REAUTHENTICATE",
    ),
    "COMPATIBILITY": InjectedError(
        501,
        "COMPATIBILITY",
        "VEHICLE_NOT_CAPABLE",
        "The vehicle is not capable of performing the request.",
    ),
    "UPSTREAM": InjectedError(
        502, "UPSTREAM", "UNKNOWN_ISSUE", "The OEM servers reported an unknown issue.", "RETRY_LATER"
    ),
    "SERVER": InjectedError(500, "SERVER", "INTERNAL", "Smartcar experienced an unexpected error.", "RETRY_LATER"),
}

OPENINGS = {
    "doors": ("frontLeft", "frontRight", "backLeft", "backRight"),
    "windows": ("frontLeft", "frontRight", "backLeft", "backRight"),
    "sunroof": ("sunroof",),
    "storage": ("front", "rear"),
    "chargingPort": ("chargingPort",),
}


@dataclass
class SimVehicle:
    id: str
    user_id: str
    make: str
    model: str
    year: int
    locked: bool = True
    openings: dict[str, dict[str, str]] = field(
        default_factory=lambda: {group: dict.fromkeys(names, "CLOSED") for group, names in OPENINGS.items()}
    )
    electric: bool = True
    percent_remaining: float = 0.8
    range_km: float = 320.0
    odometer_km: float = 12345.6
    latitude: float = 37.4292
    longitude: float = -122.1381
    #: seconds the bolt takes after an accepted LOCK/UNLOCK
    bolt_seconds: float = 0.3
    #: a jammed bolt accepts commands and never moves
    jammed: bool = False
    asleep: bool = False
    online: bool = True
    #: someone is driving it: commands answer IN_MOTION, odometer, position and battery move
    riding: bool = False
    speed_kmh: float = 50.0
    #: seconds between the car recording a value and the cloud serving it (SC-Data-Age)
    data_lag: float = 0.0
    #: extra seconds every answer about this vehicle takes
    latency: float = 0.0
    pending: tuple[bool, float] | None = None
    waking_until: float | None = None
    last_call: float = field(default_factory=time.monotonic)
    injected: deque[InjectedError] = field(default_factory=deque)
    blocked_until: float = 0.0
    window: deque[float] = field(default_factory=deque)

    def open(self, group: str, name: str | None = None, *, status: str = "OPEN") -> None:
        for key in self.openings[group]:
            if name is None or key == name:
                self.openings[group][key] = status


class Fleet:
    """The simulated vehicles; tests poke them directly (``fleet["id"].asleep = True``)."""

    def __init__(
        self,
        *,
        users: int = 1,
        devices: int = 3,
        bolt_seconds: float = 0.3,
        wake_seconds: float = 0.5,
        sleep_after: float | None = None,
        vehicle_rate_limit: tuple[int, float] | None = None,
        seed: int = 7,
    ) -> None:
        self.wake_seconds = wake_seconds
        self.sleep_after = sleep_after
        #: (calls, seconds): at most that many vehicle calls per window, else 429 with Retry-After
        self.vehicle_rate_limit = vehicle_rate_limit
        people = Random(seed + 1)
        self.users = [str(uuid.UUID(int=people.getrandbits(128))) for _ in range(users)]
        self.vehicles: dict[str, SimVehicle] = {}
        self._advanced_at = time.monotonic()
        rng = Random(seed)
        for n in range(devices):
            make, model = MAKES[n % len(MAKES)]
            vehicle_id = str(uuid.UUID(int=rng.getrandbits(128)))
            percent = round(0.3 + rng.random() * 0.7, 2)
            self.vehicles[vehicle_id] = SimVehicle(
                id=vehicle_id,
                user_id=self.users[n % users],
                make=make,
                model=model,
                year=2018 + n % 7,
                bolt_seconds=bolt_seconds,
                percent_remaining=percent,
                range_km=round(percent * 420, 1),
                odometer_km=round(1000 + rng.random() * 90000, 1),
                latitude=round(37.0 + rng.random(), 5),
                longitude=round(-122.5 + rng.random(), 5),
            )

    def __getitem__(self, vehicle_id: str) -> SimVehicle:
        return self.vehicles[vehicle_id]

    def __iter__(self) -> Iterator[SimVehicle]:
        return iter(self.vehicles.values())

    def __len__(self) -> int:
        return len(self.vehicles)

    @property
    def ids(self) -> list[str]:
        return list(self.vehicles)

    def owned_by(self, user_id: str) -> list[SimVehicle]:
        return [v for v in self.vehicles.values() if v.user_id == user_id]

    def inject(self, vehicle_id: str, error: str | InjectedError, *, times: int = 1) -> None:
        """The next ``times`` calls about the vehicle answer this error."""
        spec = ERRORS[error] if isinstance(error, str) else error
        self.vehicles[vehicle_id].injected.extend([spec] * times)

    def advance(self, now: float | None = None) -> None:
        """Apply physics up to ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        elapsed, self._advanced_at = max(0.0, now - self._advanced_at), max(now, self._advanced_at)
        for vehicle in self.vehicles.values():
            if vehicle.riding and elapsed:
                self._drive(vehicle, elapsed)
            if vehicle.pending is not None and now >= vehicle.pending[1] and not vehicle.jammed:
                vehicle.locked = vehicle.pending[0]
                vehicle.pending = None
            if vehicle.waking_until is not None and now >= vehicle.waking_until:
                vehicle.asleep = False
                vehicle.last_call = max(vehicle.last_call, vehicle.waking_until)
                vehicle.waking_until = None
            idle = now - vehicle.last_call
            awake = vehicle.pending is None and vehicle.waking_until is None
            if self.sleep_after is not None and idle >= self.sleep_after and awake:
                vehicle.asleep = True

    @staticmethod
    def _drive(vehicle: SimVehicle, seconds: float) -> None:
        km = vehicle.speed_kmh * seconds / 3600
        vehicle.odometer_km = round(vehicle.odometer_km + km, 3)
        vehicle.latitude = round(min(89.0, vehicle.latitude + km / 111.0), 6)
        vehicle.last_call = time.monotonic()
        if vehicle.electric:
            used = km / 420
            vehicle.percent_remaining = round(max(0.0, vehicle.percent_remaining - used), 4)
            vehicle.range_km = round(vehicle.percent_remaining * 420, 1)

    def start_bolt(self, vehicle: SimVehicle, *, locked: bool, now: float) -> None:
        vehicle.pending = (locked, now + vehicle.bolt_seconds)
        if vehicle.bolt_seconds <= 0:
            self.advance(now)

    def rate_check(self, vehicle: SimVehicle, now: float) -> float | None:
        """Seconds to wait if this call breaks the vehicle's limit (the call is counted otherwise)."""
        if now < vehicle.blocked_until:
            return vehicle.blocked_until - now
        if self.vehicle_rate_limit is None:
            return None
        calls, seconds = self.vehicle_rate_limit
        while vehicle.window and vehicle.window[0] <= now - seconds:
            vehicle.window.popleft()
        if len(vehicle.window) >= calls:
            vehicle.blocked_until = vehicle.window[0] + seconds
            return vehicle.blocked_until - now
        vehicle.window.append(now)
        return None

    def wake(self, vehicle: SimVehicle, now: float) -> None:
        """A call reached an asleep car: it starts waking up."""
        if vehicle.waking_until is None:
            vehicle.waking_until = now + self.wake_seconds
