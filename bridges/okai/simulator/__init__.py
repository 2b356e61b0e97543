"""A faithful OKAI PaaS cloud for tests, the demo and benchmarks.

Usage::

    sim = OkaiSimulator(user_key="...", sign_key="...", devices=3, bolt_seconds=0.3)
    async with serve_simulator(sim) as base_url:   # http://127.0.0.1:PORT/shareos-device
        ...
        sim.fleet["863795050000001"].set_online(False)
        sim.fleet.inject(code=20003, count=2)
        sim.calls[-1].path
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from bridges.okai.signing import SignParams
from bridges.okai.simulator.app import Call, CloudConfig, TimestampCheck, build_app
from bridges.okai.simulator.fleet import Fleet, Scooter
from twin.asgi import serve_asgi
from twin.simlimits import LimitProfile, VendorLimits

__all__ = [
    "DEFAULT_BASE_PATH",
    "DEFAULT_BOLT_SECONDS",
    "DEFAULT_DELIVERY_SECONDS",
    "DEMO_SIGN_KEY",
    "DEMO_USER_KEY",
    "Call",
    "Fleet",
    "OkaiSimulator",
    "Scooter",
    "imei_for",
    "serve_simulator",
]

DEFAULT_BASE_PATH = "/shareos-device"
#: the demo's and compose's simulator credentials: public, fixed so a bridge in another process can use them
DEMO_USER_KEY = "okai-demo-user-key"
DEMO_SIGN_KEY = "okai-demo-sign-key-not-a-secret"
DEFAULT_BOLT_SECONDS = 0.3
DEFAULT_DELIVERY_SECONDS = 0.05
DEFAULT_MAX_SKEW = 300.0


def imei_for(index: int) -> str:
    """The 15-digit IMEI of simulated scooter ``index`` (1-based)."""
    return f"8637950500{index:05d}"


class OkaiSimulator:
    """The vendor cloud in-process: ``.app`` (Starlette), ``.fleet`` (scooters), ``.calls`` (requests)."""

    def __init__(
        self,
        *,
        user_key: str,
        sign_key: str | None = None,
        sign_params: SignParams = "all",
        devices: int | Sequence[str] = 3,
        bolt_seconds: float = DEFAULT_BOLT_SECONDS,
        delivery_seconds: float = DEFAULT_DELIVERY_SECONDS,
        latency: float = 0.0,
        max_skew: float = DEFAULT_MAX_SKEW,
        timestamp_check: TimestampCheck = "signed",
        base_path: str = DEFAULT_BASE_PATH,
        record_calls: bool = True,
        limits: LimitProfile | None = None,
    ) -> None:
        imeis = [imei_for(i + 1) for i in range(devices)] if isinstance(devices, int) else list(devices)
        self.config = CloudConfig(
            user_key=user_key,
            sign_key=sign_key,
            sign_params=sign_params,
            max_skew=max_skew,
            timestamp_check=timestamp_check,
            record_calls=record_calls,
        )
        self.base_path = base_path.rstrip("/")
        self.fleet = Fleet(imeis=imeis, bolt_seconds=bolt_seconds, delivery_seconds=delivery_seconds)
        self.fleet.latency = latency
        self.calls: list[Call] = []
        #: the account's limits (off unless ``limits`` is given; ``.limits.configure(...)`` switches them)
        self.limits = VendorLimits(limits)
        self.app: Starlette = build_app(
            config=self.config, fleet=self.fleet, calls=self.calls, base_path=self.base_path, limits=self.limits
        )

    async def advance(self) -> None:
        """Bring every scooter's physics up to now."""
        self.fleet.advance(time.monotonic())

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]


@asynccontextmanager
async def serve_simulator(sim: OkaiSimulator, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``sim`` over real HTTP; yields the base URL a client is configured with."""
    async with serve_asgi(sim.app, host=host, port=port) as served:
        yield served.url + sim.base_path
