"""The simulated Tuya Cloud: a Starlette app over a :class:`~bridges.tuya.simulator.fleet.Fleet`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from bridges.tuya.simulator.auth import TokenStore
from bridges.tuya.simulator.card_routes import card_routes
from bridges.tuya.simulator.core import RecordedCall, SimConfig, SimState
from bridges.tuya.simulator.fleet import Fleet, now_ms
from bridges.tuya.simulator.limits import API_NAMES, refusal_answer
from bridges.tuya.simulator.lock_routes import lock_routes
from bridges.tuya.simulator.user_routes import user_routes
from twin.asgi import ServedApp, serve_asgi
from twin.simlimits import LimitProfile, VendorLimits, limit_routes

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_PROJECT_ID",
    "TuyaSimulator",
    "serve_simulator",
]

DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret-0123456789abcdef"  # noqa: S105 - simulator credential
DEFAULT_PROJECT_ID = "p1650000000000000000"


class TuyaSimulator:
    """A Tuya Cloud data center on a real HTTP server (serve ``.app``; only the base URL differs).

    Knobs: ``token_lifetime`` (seconds), ``bolt_seconds``, ``latency`` (every call; may be changed
    while serving, to make the cloud hang), ``max_requests_per_second`` (1110 beyond it),
    ``card_api_authorized`` (28841105 when False). Tests poke ``.fleet[device_id]``
    (``force_offline()``, ``stuck``, ``jammed``, ``latency``, ``inject(code, count=)``),
    ``.inject(code, count=, path_contains=)`` for cloud-wide errors, ``.fail_http(status, count=)``
    for failures of the cloud's edge (HTTP 5xx without an envelope), ``.tokens.expire_all()``, and
    read ``.calls``.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        project_id: str = DEFAULT_PROJECT_ID,
        devices: Iterable[str] | int = 1,
        bolt_seconds: float = 0.3,
        token_lifetime: float = 7200.0,
        ticket_lifetime: float = 300.0,
        latency: float = 0.0,
        max_requests_per_second: int | None = None,
        card_api_authorized: bool = True,
        max_skew: float = 900.0,
        limits: LimitProfile | None = None,
    ) -> None:
        device_ids = (
            [f"6c47sim{n:05d}lock" for n in range(1, devices + 1)] if isinstance(devices, int) else list(devices)
        )
        self.config = SimConfig(
            client_id=client_id,
            client_secret=client_secret,
            project_id=project_id,
            max_skew=max_skew,
            ticket_lifetime=ticket_lifetime,
            card_api_authorized=card_api_authorized,
            max_requests_per_second=max_requests_per_second,
            latency=latency,
        )
        self.state = SimState(
            config=self.config,
            fleet=Fleet.build(device_ids, bolt_seconds=bolt_seconds),
            tokens=TokenStore(lifetime=token_lifetime),
        )
        routes = lock_routes(self.state) + user_routes(self.state) + card_routes(self.state)
        #: the project's limits (off unless ``limits`` is given; ``.limits.configure(...)`` switches them)
        self.limits = VendorLimits(limits)
        self.app = Starlette(routes=limit_routes(routes, self.limits, answer=refusal_answer, names=API_NAMES))
        self.app.add_exception_handler(404, _not_found)
        self.app.add_exception_handler(405, _not_found)

    @property
    def fleet(self) -> Fleet:
        return self.state.fleet

    @property
    def tokens(self) -> TokenStore:
        return self.state.tokens

    @property
    def calls(self) -> list[RecordedCall]:
        return self.state.calls

    @property
    def device_ids(self) -> list[str]:
        return list(self.state.fleet.locks)

    @property
    def latency(self) -> float:
        return self.state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.state.latency = seconds

    def fail_http(self, status: int = 503, *, count: int = 1) -> None:
        """Answer the next ``count`` calls with HTTP ``status`` from the edge (before any check)."""
        self.state.fail_http(status, count=count)

    def inject(self, code: int, *, count: int = 1, path_contains: str = "") -> None:
        """Answer ``code`` to the next ``count`` authenticated calls whose path contains the fragment."""
        self.state.inject(code, count=count, path_contains=path_contains)

    async def advance(self) -> None:
        """Settle every bolt movement that is due (requests do this too)."""
        self.state.fleet.advance()


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"success": False, "code": 1108, "msg": "uri path invalid", "t": now_ms()})


@asynccontextmanager
async def serve_simulator(sim: TuyaSimulator, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[ServedApp]:
    """Serve ``sim`` on a real socket for the duration of the block."""
    async with serve_asgi(sim.app, host=host, port=port) as served:
        yield served
