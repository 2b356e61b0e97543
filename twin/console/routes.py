"""The console's routes: login, logout, the page, its two event streams and the actions.

Everything a page reads comes from the session's own MQTT connection; every action is published on
it, so the broker's ACL is what allows or refuses it. API errors are JSON ``{"error": {"code",
"message"}}``: ``SESSION_EXPIRED`` (401), ``CSRF`` (403), ``INVALID`` (400), ``REFUSED_BY_BROKER``
(403, with the MQTT reason code), ``BROKER_UNAVAILABLE`` (503).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contracts.messages import DEVICE_ID_PATTERN
from twin.console.app import Console, LoginFailed
from twin.console.link import SessionLink
from twin.console.sessions import Session, same_token
from twin.console.stream import device_stream, fleet_stream
from twin.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SecurityHeaders,
    content_security_policy,
    origin_allowed,
    page,
    set_cookie,
    valid_action,
)

__all__ = ["build_app"]

_ID = re.compile(DEVICE_ID_PATTERN)
_VENDOR = re.compile(r"^[a-z0-9_-]{1,32}$")
MAX_BODY = 64 * 1024
LOGIN_FORM_AGE = 900
ENVELOPE_KEYS = frozenset({"transaction", "expires_in", "issued_at", "if_version"})

Handler = Callable[[Request], Awaitable[Response]]


def _error(code: str, message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}, **extra}, status_code=status)


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


class _Routes:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.settings = console.settings

    # -- pages -----------------------------------------------------------------------------------
    def _session(self, request: Request) -> Session | None:
        return self.console.session(request.cookies.get(SESSION_COOKIE))

    async def index(self, request: Request) -> Response:
        if self._session(request) is None:
            return RedirectResponse("/login", status_code=303)
        shell = resources.files("twin.console").joinpath("templates", "index.html").read_text(encoding="utf-8")
        return HTMLResponse(shell)

    def _login_page(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        body = page("login.html", csrf=token, error=error, hint=self.settings.login_hint)
        response = HTMLResponse(body, status_code=status)
        set_cookie(response, request, LOGIN_COOKIE, token, max_age=LOGIN_FORM_AGE, secure=self.settings.secure_cookies)
        return response

    async def login_page(self, request: Request) -> Response:
        if self._session(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._login_page(request)

    async def login(self, request: Request) -> Response:
        async with request.form(max_files=0, max_fields=4) as form:
            username = str(form.get("username") or "").strip()
            password = str(form.get("password") or "")
            token = str(form.get("csrf") or "")
        expected = request.cookies.get(LOGIN_COOKIE)
        if not origin_allowed(request) or expected is None or not same_token(token, expected):
            return self._login_page(request, error="the login form expired: please try again", status=403)
        try:
            session = await self.console.login(username=username, password=password, address=_address(request))
        except LoginFailed as exc:
            return self._login_page(request, error=exc.message, status=exc.status)
        response = RedirectResponse("/", status_code=303)
        set_cookie(
            response,
            request,
            SESSION_COOKIE,
            session.id,
            max_age=int(self.settings.session_max),
            secure=self.settings.secure_cookies,
        )
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        if session is not None:
            async with request.form(max_files=0, max_fields=2) as form:
                token = form.get("csrf")
            if not valid_action(request, session, token if isinstance(token, str) else None):
                return _error("CSRF", "this logout did not come from the console's own page", 403)
            self.console.end(session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- reading ---------------------------------------------------------------------------------
    async def api_session(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _error("SESSION_EXPIRED", "log in again", 401)
        return JSONResponse(
            {
                "user": session.username,
                "csrf": session.csrf,
                "expires_in": self.console.sessions.expires_in(session),
                "base": self.console.base,
                "protocol": self.console.mqtt.protocol,
                "broker": f"{self.console.mqtt.host}:{self.console.mqtt.port}",
                "tile_url": self.settings.tile_url,
                "tile_attribution": self.settings.tile_attribution,
                "command_expiry": self.settings.command_expiry,
            }
        )

    def _stream(self, session: Session, body: AsyncIterator[bytes], after: Callable[[], Awaitable[None]]) -> Response:
        async def counted() -> AsyncIterator[bytes]:
            session.streams += 1  # an open page keeps its session alive (up to session_max)
            try:
                async for chunk in body:
                    yield chunk
            finally:
                session.streams -= 1
                session.last_seen = self.console.clock()
                with anyio.CancelScope(shield=True):
                    await after()

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(counted(), media_type="text/event-stream", headers=headers)

    async def api_stream(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _error("SESSION_EXPIRED", "log in again", 401)
        view = self.console.view_of(session)

        async def nothing() -> None:
            return None

        return self._stream(session, fleet_stream(view, coalesce=self.settings.coalesce), nothing)

    async def api_device_stream(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _error("SESSION_EXPIRED", "log in again", 401)
        key = self._device_key(request)
        if key is None:
            return _error("INVALID", "not a vendor/device", 400)
        link = self._link(session)
        await link.watch(key)
        body = device_stream(link.view, key, coalesce=self.settings.coalesce)
        return self._stream(session, body, lambda: link.unwatch(key))

    # -- actions ---------------------------------------------------------------------------------
    def _device_key(self, request: Request) -> str | None:
        vendor, device = request.path_params["vendor"], request.path_params["device"]
        if not _VENDOR.match(vendor) or not _ID.match(device):
            return None
        return f"{vendor}/{device}"

    @staticmethod
    def _link(session: Session) -> SessionLink:
        assert session.link is not None
        return session.link

    async def _guard(self, request: Request) -> Session | Response:
        session = self._session(request)
        if session is None:
            return _error("SESSION_EXPIRED", "your session has ended: log in again", 401)
        if not valid_action(request, session):
            return _error("CSRF", "this action did not carry the session's CSRF token", 403)
        return session

    @staticmethod
    async def _body(request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error("INVALID", f"a command is at most {MAX_BODY} bytes", 413)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return _error("INVALID", "the body is not JSON", 400)
        return body if isinstance(body, dict) else _error("INVALID", "the body is not a JSON object", 400)

    @staticmethod
    def _sent(entry: dict[str, Any]) -> Response:
        if entry["status"] == "refused":
            broker = entry["broker"]
            message = f"the broker refused it: {broker['name']} (MQTT reason code 0x{broker['code']:02X})"
            return _error("REFUSED_BY_BROKER", message, 403, command=entry)
        if entry["status"] == "unsent":
            return _error("BROKER_UNAVAILABLE", f"not sent: {entry['broker']['name']}", 503, command=entry)
        return JSONResponse({"command": entry}, status_code=202)

    async def api_set(self, request: Request) -> Response:
        session = await self._guard(request)
        if isinstance(session, Response):
            return session
        key = self._device_key(request)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        lock = body.get("lock")
        if key is None or lock not in ("LOCKED", "UNLOCKED") or set(body) != {"lock"}:
            return _error("INVALID", 'expected {"lock": "LOCKED" | "UNLOCKED"} for a vendor/device', 400)
        topic = f"{self.console.base}/{key}/set"
        summary = "lock" if lock == "LOCKED" else "unlock"
        entry = await self._link(session).send(target=key, op="set", topic=topic, body=body, summary=summary)
        return self._sent(entry)

    async def api_get(self, request: Request) -> Response:
        session = await self._guard(request)
        if isinstance(session, Response):
            return session
        key = self._device_key(request)
        if key is None:
            return _error("INVALID", "not a vendor/device", 400)
        topic = f"{self.console.base}/{key}/get"
        link = self._link(session)
        entry = await link.send(target=key, op="get", topic=topic, body={}, summary="refresh", envelope=False)
        return self._sent(entry)

    async def api_action(self, request: Request) -> Response:
        session = await self._guard(request)
        if isinstance(session, Response):
            return session
        key, action = self._device_key(request), request.path_params["action"]
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        arguments = body.get("arguments", {})
        if key is None or not _ID.match(action) or not isinstance(arguments, dict):
            return _error("INVALID", 'expected {"arguments": {...}} for a vendor/device and an action name', 400)
        link = self._link(session)
        if action not in link.view.device_meta(key).get("actions", []):
            return _error("INVALID", f"the device list of {key} does not offer {action}", 400)
        arguments = {k: v for k, v in arguments.items() if k not in ENVELOPE_KEYS}
        topic = f"{self.console.base}/{key}/request/{action}"
        entry = await link.send(target=key, op=action, topic=topic, body=arguments, summary=action)
        return self._sent(entry)

    async def api_job_cancel(self, request: Request) -> Response:
        session = await self._guard(request)
        if isinstance(session, Response):
            return session
        job_id = request.path_params["job_id"]
        if not _ID.match(job_id):
            return _error("INVALID", "not a job id", 400)
        topic = f"{self.console.base}/fleet/request/job_cancel"
        link = self._link(session)
        target = f"fleet/jobs/{job_id}"
        body = {"job_id": job_id}
        entry = await link.send(
            target=target, op="job_cancel", topic=topic, body=body, summary="cancel", envelope=False
        )
        return self._sent(entry)


def build_app(console: Console) -> Starlette:
    r = _Routes(console)
    device = "/api/devices/{vendor}/{device}"
    routes = [
        Route("/", r.index),
        Route("/login", r.login_page, methods=["GET"]),
        Route("/login", r.login, methods=["POST"]),
        Route("/logout", r.logout, methods=["POST"]),
        Route("/healthz", r.health),
        Route("/api/session", r.api_session),
        Route("/api/stream", r.api_stream),
        Route(f"{device}/stream", r.api_device_stream),
        Route(f"{device}/set", r.api_set, methods=["POST"]),
        Route(f"{device}/get", r.api_get, methods=["POST"]),
        Route(device + "/request/{action}", r.api_action, methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", r.api_job_cancel, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("twin.console", "static")]), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders, csp=content_security_policy(console.settings.tile_origin)),
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    return Starlette(routes=routes, middleware=middleware)
