"""OKAI's kit for the vendor contract suite (:mod:`twin.testing_contract`): one scooter of the
simulated cloud (signing on), served over real HTTP.

Switches: offline is the scooter's modem (the cloud answers ``20002 device offline``); hang is the
cloud's latency; a rate limit is HTTP 429 with ``Retry-After``, a server error HTTP 503, both from
the cloud's edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from bridges.okai.tests.helpers import SIGN_KEY, USER_KEY, settings_for
from twin.testing_contract import VendorKit


class Kit(VendorKit):
    vendor = "okai"

    def __init__(self) -> None:
        self.sim = OkaiSimulator(
            user_key=USER_KEY, sign_key=SIGN_KEY, devices=1, bolt_seconds=0.0, delivery_seconds=0.0
        )
        self.device = self.sim.fleet.imeis[0]

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[OkaiAdapter]:
        async with serve_simulator(self.sim) as base_url:
            yield OkaiAdapter(settings=settings_for(base_url, self.sim, poll_interval=None, timeout=5.0))

    def locked(self) -> bool:
        self.sim.fleet.advance()  # physics up to now
        return self.sim.fleet[self.device].locked

    def offline(self, offline: bool) -> None:
        self.sim.fleet[self.device].set_online(not offline)

    def hang(self, seconds: float) -> None:
        self.sim.fleet.latency = seconds

    def rate_limit(self, *, times: int, retry_after: float) -> None:
        self.sim.fleet.fail_http(status=429, count=times, retry_after=retry_after)

    def server_error(self, *, times: int) -> None:
        self.sim.fleet.fail_http(status=503, count=times)

    def calls(self) -> int:
        return len(self.sim.calls)

    def secrets(self) -> list[str]:
        return [USER_KEY, SIGN_KEY]
