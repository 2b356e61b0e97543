"""Server-side sessions: who is logged in, their CSRF token, when the login ends.

A session is a random id in an HttpOnly, SameSite=Strict cookie; everything else stays on the server:
the username, the broker password (kept only to reconnect the session's MQTT connection, never sent
to the page nor logged), and the CSRF token that every action must carry. A session ends on logout,
after ``session_max`` seconds in any case, or after ``session_idle`` seconds with no request and no
open page. Time comes from an injected clock, so expiry is tested without waiting.

Failed logins are counted per username and address (:class:`LoginThrottle`): the broker itself
does not slow down password guessing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from twin.console.link import SessionLink

__all__ = ["Clock", "LoginThrottle", "Session", "SessionStore", "same_token"]

Clock = Callable[[], float]


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


@dataclass(eq=False)
class Session:
    id: str
    username: str
    password: SecretStr | None = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    #: pages streaming from this session right now (an open page keeps the session alive)
    streams: int = 0
    link: SessionLink | None = None

    @property
    def tag(self) -> str:
        """A short, non-secret name of the session for client ids and reply topics."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:12]


class SessionStore:
    def __init__(self, *, clock: Clock, idle: float, max_age: float, limit: int) -> None:
        self.clock = clock
        self.idle = idle
        self.max_age = max_age
        self.limit = limit
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def new(self, *, username: str, password: SecretStr | None) -> Session:
        now = self.clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            username=username,
            password=password,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
        )
        self._sessions[session.id] = session
        return session

    def full(self) -> bool:
        return len(self._sessions) >= self.limit

    def expired(self, session: Session) -> bool:
        now = self.clock()
        if now >= session.created + self.max_age:
            return True
        return session.streams == 0 and now >= session.last_seen + self.idle

    def expires_in(self, session: Session) -> float:
        """Seconds until the session ends for sure (its maximum age), for the page to show."""
        return max(0.0, session.created + self.max_age - self.clock())

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and mark it seen), or None: unknown or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or self.expired(session):
            return None
        session.last_seen = self.clock()
        return session

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        session.password = None

    def sweep(self) -> list[Session]:
        """Remove and return the sessions that have expired."""
        gone = [s for s in self._sessions.values() if self.expired(s)]
        for session in gone:
            self.remove(session)
        return gone


class LoginThrottle:
    """At most ``failures`` failed logins per (username, address) within ``window`` seconds."""

    def __init__(self, *, clock: Clock, failures: int, window: float) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self._failed: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        times = self._failed.get(key, deque())
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        if not times:
            self._failed.pop(key, None)
        return times

    def locked(self, username: str, address: str) -> float:
        """Seconds until this username may try again from this address (0: now)."""
        times = self._recent((username, address))
        if len(times) < self.failures:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def failed(self, username: str, address: str) -> None:
        if len(self._failed) > 10_000:  # a flood of made-up names must not grow this without bound
            for key in list(self._failed):
                self._recent(key)
        self._failed.setdefault((username, address), deque()).append(self.clock())

    def succeeded(self, username: str, address: str) -> None:
        self._failed.pop((username, address), None)
