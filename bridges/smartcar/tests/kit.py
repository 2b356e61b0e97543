"""Smartcar's kit for the vendor contract suite (:mod:`twin.testing_contract`): one car of the
simulated cloud, linked at start with the simulator's demo code (OAuth2, refresh rotation), served
over real HTTP.

Switches, as Smartcar says each: offline is the car out of coverage (409 ``VEHICLE_STATE``
``UNREACHABLE``); hang is the cloud's latency; a rate limit is 429 ``RATE_LIMIT`` ``VEHICLE`` with
``Retry-After`` (whole seconds, at least 1, as Smartcar sends it); a server error is 500 ``SERVER``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.simulator import DEMO_CODE, ERRORS, InjectedError, SmartcarSimulator, serve_simulator
from bridges.smartcar.tests.conftest import make_settings
from twin.testing_contract import VendorKit


class Kit(VendorKit):
    vendor = "smartcar"

    def __init__(self) -> None:
        self.sim = SmartcarSimulator(devices=1, bolt_seconds=0.0, wake_seconds=0.0, demo_code=DEMO_CODE)
        self.device = self.sim.fleet.ids[0]
        self._adapter: SmartcarAdapter | None = None

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[SmartcarAdapter]:
        async with serve_simulator(self.sim) as served:
            settings = make_settings(
                served.url,
                client_id=self.sim.oauth.client_id,
                client_secret=self.sim.oauth.client_secret,
                auth_code=DEMO_CODE,
                poll_interval=None,
                request_timeout=5.0,
            )
            self._adapter = SmartcarAdapter(settings=settings)
            yield self._adapter

    def locked(self) -> bool:
        self.sim.fleet.advance()
        return self.sim.fleet.vehicles[self.device].locked

    def offline(self, offline: bool) -> None:
        self.sim.fleet.vehicles[self.device].online = not offline

    def hang(self, seconds: float) -> None:
        self.sim.cloud.latency = seconds

    def rate_limit(self, *, times: int, retry_after: float) -> None:
        limit = ERRORS["RATE_LIMIT"]
        vehicle = self.sim.fleet.vehicles[self.device]
        vehicle.injected.extend(
            [InjectedError(limit.status, limit.type, limit.code, limit.description, limit.resolution, retry_after)]
            * times
        )

    def server_error(self, *, times: int) -> None:
        self.sim.fleet.vehicles[self.device].injected.extend([ERRORS["SERVER"]] * times)

    def calls(self) -> int:
        return len(self.sim.calls)

    def secrets(self) -> list[str]:
        linked = [] if self._adapter is None else self._adapter.store.accounts()
        tokens = [token for account in linked for token in (account.access_token, account.refresh_token)]
        return [self.sim.oauth.client_secret, DEMO_CODE, *tokens]
