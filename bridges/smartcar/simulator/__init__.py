"""A faithful Smartcar cloud for tests and demos: same paths, envelopes, auth and error bodies.

Serve ``SmartcarSimulator(...).app`` with :func:`twin.asgi.serve_asgi` (or :func:`serve_simulator`)
and point the bridge's ``base_url`` at ``{url}/v2.0``, ``auth_url`` at ``{url}/oauth/token``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from twin.asgi import ServedApp, serve_asgi
from twin.simlimits import LimitProfile

from .app import RecordedCall, SmartcarCloud, build_app, error_response
from .fleet import ERRORS, Fleet, InjectedError, SimVehicle
from .limits import SmartcarLimits
from .oauth import ALL_SCOPES, Grant, OAuthServer

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REDIRECT_URI",
    "DEMO_CODE",
    "ERRORS",
    "Fleet",
    "InjectedError",
    "RecordedCall",
    "SimVehicle",
    "SmartcarLimits",
    "SmartcarSimulator",
    "error_response",
    "serve_simulator",
]

DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret"  # noqa: S105 - the simulator's own test credential
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8000/smartcar/callback"
#: the code the demo configures (``auth_code``); accepted again and again for the first user
DEMO_CODE = "sim-demo-code"


class SmartcarSimulator:
    """Vehicles, an authorization server and the HTTP app over them; everything is pokeable."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uri: str | None = DEFAULT_REDIRECT_URI,
        users: int = 1,
        devices: int = 3,
        bolt_seconds: float = 0.3,
        wake_seconds: float = 0.5,
        sleep_after: float | None = None,
        vehicle_rate_limit: tuple[int, float] | None = None,
        access_token_lifetime: float = 7200.0,
        refresh_grace: float = 0.0,
        latency: float = 0.0,
        demo_code: str | None = None,
        seed: int = 7,
        limits: LimitProfile | None = None,
        vehicle_quota: LimitProfile | None = None,
    ) -> None:
        self.fleet = Fleet(
            users=users,
            devices=devices,
            bolt_seconds=bolt_seconds,
            wake_seconds=wake_seconds,
            sleep_after=sleep_after,
            vehicle_rate_limit=vehicle_rate_limit,
            seed=seed,
        )
        self.oauth = OAuthServer(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            access_token_lifetime=access_token_lifetime,
            refresh_grace=refresh_grace,
            demo_code=demo_code,
            demo_user=self.fleet.users[0],
        )
        self.cloud = SmartcarCloud(fleet=self.fleet, oauth=self.oauth, latency=latency)
        #: the application's limits and each vehicle's monthly quota (off unless given; ``.limits.configure``)
        self.limits = SmartcarLimits(limits, vehicle_quota=vehicle_quota)
        self.app: Starlette = build_app(self.cloud, self.limits)

    @property
    def calls(self) -> list[RecordedCall]:
        return self.cloud.calls

    async def advance(self) -> None:
        """Apply the physics up to now (every request does this too)."""
        self.fleet.advance()

    def issue_code(self, user_id: str | None = None) -> str:
        """An authorization code, as Connect would redirect with after the user approved."""
        return self.oauth.issue_code(user_id or self.fleet.users[0])

    def issue_tokens(self, user_id: str | None = None) -> dict[str, object]:
        """A token answer for ``user_id``, as if the code had just been exchanged."""
        return self.oauth.issue_tokens(Grant(user_id=user_id or self.fleet.users[0], scope=ALL_SCOPES))


@asynccontextmanager
async def serve_simulator(simulator: SmartcarSimulator, *, port: int = 0) -> AsyncIterator[ServedApp]:
    """Serve the simulator on 127.0.0.1 for the block's duration."""
    async with serve_asgi(simulator.app, host="127.0.0.1", port=port) as served:
        yield served
