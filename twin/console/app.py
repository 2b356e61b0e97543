"""The console: sessions, each with its own MQTT connection, and the web app that serves them.

Constructing a :class:`Console` only assigns; ``async with console`` starts the task group in which
every session's connection runs and a sweeper that ends expired sessions; leaving it ends them all.
:func:`serve_console` also serves the app on a real socket (uvicorn, as the rest of the project)::

    async with serve_console(settings=settings.console, mqtt=settings.mqtt, base=settings.base_topic) as served:
        print(served.url)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from pydantic import SecretStr
from starlette.applications import Starlette

from twin.asgi import ServedApp, serve_asgi
from twin.config import MqttSettings
from twin.console.fleet import FleetView
from twin.console.link import BrokerUnavailable, LoginRefused, SessionLink
from twin.console.sessions import Clock, LoginThrottle, Session, SessionStore
from twin.console.settings import ConsoleSettings

__all__ = ["USERNAME_PATTERN", "Console", "LoginFailed", "serve_console"]

log = logging.getLogger(__name__)

#: usernames become part of reply topics and transactions: no MQTT wildcards, separators or spaces
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
_USERNAME = re.compile(USERNAME_PATTERN)
SWEEP_INTERVAL = 1.0


class LoginFailed(Exception):
    """Why a login did not succeed, in words for the login page, and the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Console:
    def __init__(
        self,
        *,
        settings: ConsoleSettings,
        mqtt: MqttSettings,
        base: str = "locktwin",
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.base = base
        self.clock = clock
        self.sessions = SessionStore(
            clock=clock, idle=settings.session_idle, max_age=settings.session_max, limit=settings.max_sessions
        )
        self.throttle = LoginThrottle(clock=clock, failures=settings.login_failures, window=settings.login_lockout)
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._app: Starlette | None = None

    @property
    def app(self) -> Starlette:
        if self._app is None:
            from twin.console.routes import build_app

            self._app = build_app(self)
        return self._app

    async def __aenter__(self) -> Console:
        self._tg = await anyio.create_task_group().__aenter__()
        self._tg.start_soon(self._sweep)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in list(self.sessions):
            self.end(session)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    async def _sweep(self) -> None:
        while True:
            await anyio.sleep(SWEEP_INTERVAL)
            for session in self.sessions.sweep():
                self._stop(session)

    # -- sessions --------------------------------------------------------------------------------
    def session(self, session_id: str | None) -> Session | None:
        """The live session of a cookie; an expired one is ended on the way."""
        if session_id and (session := self.sessions.get(session_id)) is not None:
            return session
        for gone in self.sessions.sweep():
            self._stop(gone)
        return None

    async def login(self, *, username: str, password: str, address: str) -> Session:
        """Connect to the broker as this person; the session exists only once the broker said yes."""
        if not _USERNAME.match(username):
            raise LoginFailed("a username is 1-64 letters, digits and . _ @ -", 400)
        wait = self.throttle.locked(username, address)
        if wait > 0:
            raise LoginFailed(f"too many failed logins: try again in {wait:.0f} s", 429)
        if self.sessions.full():
            for gone in self.sessions.sweep():
                self._stop(gone)
            if self.sessions.full():
                raise LoginFailed("the console has as many sessions as it serves: try again later", 503)
        secret = SecretStr(password) if password else None
        session = self.sessions.new(username=username, password=secret)
        view = FleetView(base=self.base)
        link = SessionLink(
            mqtt=self.mqtt,
            base=self.base,
            username=username,
            password=secret,
            tag=session.tag,
            view=view,
            command_expiry=self.settings.command_expiry,
        )
        session.link = link
        scope = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await link.run(task_status=task_status)

        assert self._tg is not None, "use the console as `async with console:`"
        try:
            with anyio.fail_after(15):
                await self._tg.start(run)
        except LoginRefused as exc:
            self.sessions.remove(session)
            self.throttle.failed(username, address)
            log.info("console login of %s from %s refused by the broker: %s", username, address, exc)
            raise LoginFailed(f"the broker refused the login: {exc}") from None
        except (BrokerUnavailable, TimeoutError) as exc:
            self.sessions.remove(session)
            raise LoginFailed(f"cannot reach the broker: {exc}", 503) from None
        self.throttle.succeeded(username, address)
        self._scopes[session.id] = scope
        log.info("console login of %s from %s", username, address)
        return session

    def end(self, session: Session) -> None:
        """Log out: the session's connection closes and its pages end."""
        self.sessions.remove(session)
        self._stop(session)

    def _stop(self, session: Session) -> None:
        if session.link is not None:
            session.link.forget_password()
            session.link.view.close()
        scope = self._scopes.pop(session.id, None)
        if scope is not None:
            scope.cancel()

    def view_of(self, session: Session) -> FleetView:
        assert session.link is not None
        return session.link.view


@asynccontextmanager
async def serve_console(
    *,
    settings: ConsoleSettings,
    mqtt: MqttSettings,
    base: str = "locktwin",
    clock: Clock = time.monotonic,
) -> AsyncIterator[tuple[Console, ServedApp]]:
    """Run a console and serve it on ``settings.host:settings.port`` until the block exits."""
    console = Console(settings=settings, mqtt=mqtt, base=base, clock=clock)
    async with console, serve_asgi(console.app, host=settings.host, port=settings.port) as served:
        try:
            yield console, served
        finally:
            for session in list(console.sessions):  # end the pages' streams before the server stops
                console.end(session)
