"""Segway's kit for the vendor contract suite (:mod:`twin.testing_contract`): one e-bike of the
simulated Discovery cloud (OAuth2 token, envelopes), served over real HTTP, push off.

Switches: offline is the vehicle's link (``15301 offline device``); hang is the cloud's latency; a
rate limit is HTTP 429 with ``Retry-After``, a server error HTTP 503, both from the cloud's edge
(the token endpoint included: whatever call comes next).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridges.segway.adapter import SegwayAdapter
from bridges.segway.simulator import SegwaySimulator
from bridges.segway.tests.conftest import CLIENT_ID, DEVICES, SECRET, make_settings
from twin.testing_contract import VendorKit


class Kit(VendorKit):
    vendor = "segway"

    def __init__(self) -> None:
        self.device = DEVICES[0]
        self.sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=[self.device], bolt_seconds=0.0)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[SegwayAdapter]:
        async with self.sim.serve() as served:
            yield SegwayAdapter(settings=make_settings(served.url, devices=[self.device], poll_interval=None))

    def locked(self) -> bool:
        vehicle = self.sim.fleet[self.device]
        vehicle.settle()
        return vehicle.locked

    def offline(self, offline: bool) -> None:
        vehicle = self.sim.fleet[self.device]
        if offline:
            vehicle.go_offline()
        else:
            vehicle.go_online()

    def hang(self, seconds: float) -> None:
        self.sim.latency = seconds

    def rate_limit(self, *, times: int, retry_after: float) -> None:
        self.sim.fail_next(429, times=times, retry_after=retry_after)

    def server_error(self, *, times: int) -> None:
        self.sim.fail_next(503, times=times)

    def calls(self) -> int:
        return len(self.sim.calls)

    def secrets(self) -> list[str]:
        return [SECRET, *self.sim.tokens]
