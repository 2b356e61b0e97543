"""Simulated Tuya door locks: a bolt that takes time, users, unlock methods and cards.

Physics runs on real time: a remote lock/unlock is accepted at once and the bolt reaches its new
position ``bolt_seconds`` later (``advance()`` settles due movements; the app calls it on every
request). Tests poke the fleet directly: force a device offline, make a lock accept and never move
(``stuck``), jam it, slow it down (``latency``) or inject a Tuya error code for the next N calls.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Fleet",
    "Injection",
    "SimCard",
    "SimLock",
    "SimOpmode",
    "SimUser",
    "now_ms",
]

_ids = itertools.count(30665363)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SimUser:
    user_id: str
    nick_name: str
    user_type: int = 20  # 10 admin, 20 normal member, 50 owner
    lock_user_id: int = 0
    uid: str = ""
    sex: int = 0
    birthday: int | None = None
    height: int | None = None
    weight: int | None = None
    contact: str = ""
    absent: bool = False
    schedule: dict[str, Any] = field(default_factory=lambda: {"permanent": True})

    @property
    def role(self) -> str:
        return {10: "admin", 50: "owner"}.get(self.user_type, "normal")


@dataclass
class SimOpmode:
    opmode_id: str
    dp_code: str
    unlock_sn: int
    unlock_name: str
    user_id: str | None = None
    unlock_attr: int = 0
    phase: int = 3


@dataclass
class SimCard:
    card_id: str
    lock_card_id: str
    begin_time: int
    end_time: int
    frozen: bool = False


@dataclass
class Injection:
    """Answer ``code`` to the next ``count`` matching calls (path containing ``path_contains``)."""

    code: int
    count: int
    path_contains: str = ""
    msg: str = "injected error"


@dataclass
class SimLock:
    device_id: str
    name: str
    bolt_seconds: float = 0.3
    locked: bool = True
    online: bool = True
    #: accepts door-operate and never moves
    stuck: bool = False
    #: accepts, tries, raises alarm ``tongue_bad`` and stays where it is
    jammed: bool = False
    #: firmware whose lock_motor_state is true when unlocked
    inverted_polarity: bool = False
    #: remote unlock without password enabled on the lock (the remote-unlocks answer)
    remote_unlock_without_pwd: bool = True
    #: seconds every device-bound call takes
    latency: float = 0.0
    residual_electricity: int = 87
    local_key: str = field(default_factory=lambda: secrets.token_hex(8))
    door_opened: bool = False
    alarm_lock: str = ""
    update_time: int = field(default_factory=now_ms)
    users: dict[str, SimUser] = field(default_factory=dict)
    opmodes: list[SimOpmode] = field(default_factory=list)
    cards: dict[str, SimCard] = field(default_factory=dict)
    open_logs: list[dict[str, Any]] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    _target: bool | None = None
    _due: float = 0.0

    # -- tests poke these ---------------------------------------------------------------------

    def force_offline(self, offline: bool = True) -> None:
        self.online = not offline
        self.update_time = now_ms()

    def inject(self, code: int, *, count: int = 1, path_contains: str = "", msg: str = "") -> None:
        self.injections.append(Injection(code, count, path_contains, msg or "injected error"))

    # -- physics ------------------------------------------------------------------------------

    @property
    def moving(self) -> bool:
        return self._target is not None

    def operate(self, *, lock: bool) -> None:
        """The cloud delivered a remote lock (``lock``) or unlock command to the device."""
        if self.stuck:
            return
        self.alarm_lock = ""  # a new attempt clears the last jam alarm
        self._target = lock
        self._due = time.monotonic() + self.bolt_seconds
        self.advance()

    def advance(self) -> None:
        if self._target is None or time.monotonic() < self._due:
            return
        target, self._target = self._target, None
        self.update_time = now_ms()
        if self.jammed:
            self.alarm_lock = "tongue_bad"
            return
        self.alarm_lock = ""
        self.locked = target
        if not target:
            self.open_logs.append(
                {
                    "update_time": self.update_time,
                    "status": {"code": "unlock_app", "value": 1},
                    "unlock_name": "remote",
                    "user_id": "0",
                    "nick_name": "cloud",
                }
            )

    def status(self) -> list[dict[str, Any]]:
        self.advance()
        battery = self.residual_electricity
        state = "high" if battery > 60 else "medium" if battery > 30 else "low" if battery > 0 else "poweroff"
        return [
            {"code": "lock_motor_state", "value": self.locked != self.inverted_polarity},
            {"code": "residual_electricity", "value": battery},
            {"code": "battery_state", "value": state},
            {"code": "door_opened", "value": self.door_opened},
            {"code": "alarm_lock", "value": self.alarm_lock},
        ]

    def take_injection(self, path: str) -> Injection | None:
        for injection in self.injections:
            if injection.path_contains in path:
                injection.count -= 1
                if injection.count <= 0:
                    self.injections.remove(injection)
                return injection
        return None

    # -- users, unlock methods, cards -----------------------------------------------------------

    def add_user(self, nick_name: str, *, user_type: int = 20, **fields: Any) -> SimUser:
        user_id = str(next(_ids))
        lock_user_id = max((u.lock_user_id for u in self.users.values()), default=0) + 1
        user = SimUser(
            user_id=user_id,
            nick_name=nick_name,
            user_type=user_type,
            lock_user_id=lock_user_id,
            uid=f"ay{user_id}U",
            **fields,
        )
        self.users[user_id] = user
        return user

    def issue_card(self, card_id: str) -> SimCard:
        for card in self.cards.values():
            if card.card_id == card_id:
                return card
        lock_card_id = str(next(_ids))
        start = now_ms()
        card = SimCard(card_id, lock_card_id, start, start + 365 * 86400 * 1000)
        self.cards[lock_card_id] = card
        return card


@dataclass
class Fleet:
    locks: dict[str, SimLock] = field(default_factory=dict)

    @classmethod
    def build(cls, device_ids: Iterable[str], *, bolt_seconds: float) -> Fleet:
        fleet = cls()
        for number, device_id in enumerate(device_ids, start=1):
            lock = SimLock(device_id=device_id, name=f"Door {number}", bolt_seconds=bolt_seconds)
            lock.add_user("Owner", user_type=50)
            lock.add_user("Admin", user_type=10)
            lock.add_user("Guest", user_type=20, absent=True)
            serial = itertools.count(729548)
            for dp_code, count in (("unlock_password", 3), ("unlock_fingerprint", 2), ("unlock_card", 2)):
                for sn in range(1, count + 1):
                    lock.opmodes.append(SimOpmode(str(next(serial)), dp_code, sn, f"{dp_code[7:]}-{sn}"))
            fleet.locks[device_id] = lock
        return fleet

    def __getitem__(self, device_id: str) -> SimLock:
        return self.locks[device_id]

    def advance(self) -> None:
        for lock in self.locks.values():
            lock.advance()
