"""Simulated OKAI scooters: a bolt that takes time, a rider who rides, a modem that drops out.

Physics is driven by real (monotonic) time and computed lazily: every request calls
:meth:`Fleet.advance` first, so a test never waits for a background loop. Knobs a test may poke:
``Scooter.online``/``set_online``, ``riding``/``ride``, ``jammed``, ``refuse``, ``delivery_seconds``
(how long a command takes to reach the scooter), ``latency`` (a slow answer) and
:meth:`Fleet.inject` / :meth:`Fleet.fail_http` (canned failures for the next N calls).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bridges.okai.models import Operate, ScooterLocation, ScooterStatus

__all__ = ["DEFAULT_RANGE_M", "Fault", "Fleet", "HttpFault", "PendingCommand", "Scooter"]

DEFAULT_RANGE_M = 40_000.0
#: degrees of latitude per metre (close enough for a simulator)
_DEG_PER_M = 1 / 111_320

Outcome = Literal["pending", "applied", "dropped", "jammed"]


@dataclass(kw_only=True)
class PendingCommand:
    """A switchLock the cloud accepted, on its way to the scooter."""

    operate: Operate
    received_at: float
    deliver_at: float
    deadline: float
    outcome: Outcome = "pending"


@dataclass(kw_only=True)
class Scooter:
    imei: str
    locked: bool = True
    online: bool = True
    battery: float = 90.0
    latitude: float = 52.3702
    longitude: float = 4.8952
    speed_kmh: float = 0.0
    riding: bool = False
    total_m: float = 1_250_000.0
    range_m: float = DEFAULT_RANGE_M
    jammed: bool = False
    refuse: bool = False
    delivery_seconds: float = 0.05
    bolt_seconds: float = 0.3
    latency: float = 0.0
    #: every command the cloud accepted for this scooter, oldest first
    commands: list[PendingCommand] = field(default_factory=list)
    _pending: list[PendingCommand] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)
    _bolt_target: bool | None = None
    _bolt_done_at: float = 0.0
    _online_since: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    # -- pokes -------------------------------------------------------------------------------------

    def set_online(self, online: bool, *, at: float | None = None) -> None:
        """Connect or disconnect the scooter's modem (``at``: monotonic time, default now)."""
        if online and not self.online:
            self._online_since = time.monotonic() if at is None else at
        self.online = online

    def ride(self, speed_kmh: float = 18.0) -> None:
        """A rider starts riding (the scooter must be unlocked to move)."""
        self.riding = True
        self.speed_kmh = speed_kmh

    # -- physics -----------------------------------------------------------------------------------

    @property
    def remain_m(self) -> float:
        return self.range_m * self.battery / 100

    @property
    def moving(self) -> bool:
        return self.riding and not self.locked and self.battery > 0

    def advance(self, now: float) -> None:
        dt = max(0.0, now - self._last)
        if self.moving and dt > 0:
            metres = self.speed_kmh / 3.6 * dt
            self.total_m += metres
            self.battery = max(0.0, self.battery - metres / self.range_m * 100)
            self.latitude += metres * _DEG_PER_M
        self._last = now
        if self._pending and self.online:
            for command in [c for c in self._pending if c.deliver_at <= now]:
                self._pending.remove(command)
                self._deliver(command, max(command.deliver_at, self._online_since))
        if self._bolt_target is not None and self._bolt_done_at <= now:
            self.locked = self._bolt_target
            self._bolt_target = None
            if self.locked:
                self.riding = False
        if self.online:
            self.updated_at = time.time()

    def _deliver(self, command: PendingCommand, at: float) -> None:
        if at > command.deadline:
            command.outcome = "dropped"  # expireTime passed before the scooter got it
            return
        if self.jammed:
            command.outcome = "jammed"
            return
        command.outcome = "applied"
        self._bolt_target = command.operate == "lock"
        self._bolt_done_at = at + self.bolt_seconds

    def accept(self, operate: Operate, expire_time: int, now: float) -> PendingCommand:
        command = PendingCommand(
            operate=operate,
            received_at=now,
            deliver_at=now + self.delivery_seconds,
            deadline=now + expire_time,
        )
        self.commands.append(command)
        self._pending.append(command)
        self.advance(now)
        return command

    # -- views -------------------------------------------------------------------------------------

    def status(self) -> ScooterStatus:
        return ScooterStatus(
            imei=self.imei,
            batteryPercent=round(self.battery),
            latitude=round(self.latitude, 6),
            longitude=round(self.longitude, 6),
            speed=round(self.speed_kmh, 1) if self.moving else 0.0,
            totalMile=round(self.total_m / 1000, 2),
            remainMile=round(self.remain_m / 1000, 2),
            lockStatus=1 if self.locked else 0,
            online=self.online,
            updateTime=int(self.updated_at * 1000),
        )

    def location(self) -> ScooterLocation:
        return ScooterLocation(
            imei=self.imei,
            latitude=round(self.latitude, 6),
            longitude=round(self.longitude, 6),
            gpsTime=int(self.updated_at * 1000),
        )


@dataclass(kw_only=True)
class Fault:
    """Answer the next ``count`` matching calls with this envelope code."""

    code: int
    msg: str
    count: int
    imei: str | None = None
    path: str | None = None

    def matches(self, path: str, imei: str | None) -> bool:
        return (self.path is None or self.path == path) and (self.imei is None or self.imei == imei)


@dataclass(kw_only=True)
class HttpFault:
    status: int
    count: int
    retry_after: float | None = None  # sent as a Retry-After header


class Fleet:
    """The account's scooters plus injected faults."""

    def __init__(self, *, imeis: Iterable[str], bolt_seconds: float, delivery_seconds: float) -> None:
        self.scooters: dict[str, Scooter] = {
            imei: Scooter(imei=imei, bolt_seconds=bolt_seconds, delivery_seconds=delivery_seconds) for imei in imeis
        }
        self.faults: list[Fault] = []
        self.http_faults: list[HttpFault] = []
        self.latency = 0.0

    def __getitem__(self, imei: str) -> Scooter:
        return self.scooters[imei]

    @property
    def imeis(self) -> list[str]:
        return list(self.scooters)

    def advance(self, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        for scooter in self.scooters.values():
            scooter.advance(at)

    def inject(
        self, *, code: int, msg: str = "injected", count: int = 1, imei: str | None = None, path: str | None = None
    ) -> None:
        self.faults.append(Fault(code=code, msg=msg, count=count, imei=imei, path=path))

    def fail_http(self, *, status: int = 503, count: int = 1, retry_after: float | None = None) -> None:
        self.http_faults.append(HttpFault(status=status, count=count, retry_after=retry_after))

    def take_fault(self, path: str, imei: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(path, imei):
                fault.count -= 1
                return fault
        return None

    def take_http_fault(self) -> HttpFault | None:
        for fault in self.http_faults:
            if fault.count > 0:
                fault.count -= 1
                return fault
        return None
