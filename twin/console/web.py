"""HTTP plumbing of the console: security headers, cookies, the request checks every action passes,
and the two HTML pages (templates shipped in the package, filled with escaped values).

Every response carries a Content-Security-Policy without inline script or style (scripts, styles and
fonts only from the console itself; images also from the configured tile server), forbids framing
and sniffing, and sends no referrer to other sites. An action (any POST) must come from a live session, carry that
session's CSRF token and, when the browser says where it comes from (``Origin``,
``Sec-Fetch-Site``), come from the console's own origin.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twin.console.sessions import Session, same_token

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "SecurityHeaders",
    "content_security_policy",
    "origin_allowed",
    "page",
    "set_cookie",
    "valid_action",
]

SESSION_COOKIE = "locktwin_session"
LOGIN_COOKIE = "locktwin_login"
CSRF_HEADER = "x-csrf-token"


def content_security_policy(tile_origin: str | None) -> str:
    images = "'self' data:" + (f" {tile_origin}" if tile_origin else "")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


class SecurityHeaders:
    """Pure ASGI middleware (streams pass through untouched) adding the headers to every response."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = {
            "content-security-policy": csp,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "same-origin",  # "no-referrer" makes Chromium send Origin: null on form posts
            "cross-origin-opener-policy": "same-origin",
            "cross-origin-resource-policy": "same-origin",
            "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if not scope["path"].startswith("/static/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure_request(request: Request, configured: bool | None) -> bool:
    return request.url.scheme == "https" if configured is None else configured


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int, secure: bool | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_request(request, secure),
    )


def origin_allowed(request: Request) -> bool:
    """False when the browser says the request comes from another site or origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def valid_action(request: Request, session: Session, token: str | None = None) -> bool:
    """An action of this session: its CSRF token (header, or the form's ``csrf``) and its origin."""
    given = request.headers.get(CSRF_HEADER) if token is None else token
    return origin_allowed(request) and same_token(given, session.csrf)


def _template(name: str) -> Template:
    return Template(resources.files("twin.console").joinpath("templates", name).read_text(encoding="utf-8"))


def page(name: str, **values: str) -> str:
    """A template of the package with every value HTML-escaped."""
    return _template(name).substitute({k: html.escape(v, quote=True) for k, v in values.items()})
