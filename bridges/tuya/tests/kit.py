"""Tuya's kit for the vendor contract suite (:mod:`twin.testing_contract`): one door lock of the
simulated data center (signed calls, tokens, envelopes, the card API), served over real HTTP.

Switches, as Tuya says each: offline is the lock's link (``2001 device is offline``); hang is the
cloud's latency; a rate limit is the envelope's ``1110 too many requests`` (HTTP 200, no
``Retry-After``: Tuya sends none); a server error is HTTP 503 from the edge in front of the API.
The secrets test also sets two door-lock cards, whose full ids must never be published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.simulator import DEFAULT_CLIENT_SECRET, TuyaSimulator, serve_simulator
from bridges.tuya.tests.conftest import tuya_settings
from twin.testing import BridgeHarness
from twin.testing_contract import VendorKit

#: Tuya's code for "too many requests" (the envelope's, with HTTP 200)
TOO_MANY_REQUESTS = 1110
CARDS = ("KIT-CARD-00011111", "KIT-CARD-00022222")


class Kit(VendorKit):
    vendor = "tuya"

    def __init__(self) -> None:
        self.sim = TuyaSimulator(devices=1, bolt_seconds=0.0)
        self.device = self.sim.device_ids[0]

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[TuyaAdapter]:
        async with serve_simulator(self.sim) as served:
            yield TuyaAdapter(settings=tuya_settings(self.sim, served, poll_interval=None, timeout=5.0))

    def locked(self) -> bool:
        lock = self.sim.fleet[self.device]
        lock.advance()
        return lock.locked

    def offline(self, offline: bool) -> None:
        self.sim.fleet[self.device].force_offline(offline)

    def hang(self, seconds: float) -> None:
        self.sim.latency = seconds

    def rate_limit(self, *, times: int, retry_after: float) -> None:
        self.sim.inject(TOO_MANY_REQUESTS, count=times)

    def server_error(self, *, times: int) -> None:
        self.sim.fail_http(503, count=times)

    def calls(self) -> int:
        return len(self.sim.calls)

    def secrets(self) -> list[str]:
        tokens = self.sim.tokens
        return [DEFAULT_CLIENT_SECRET, *tokens.access, *tokens.refresh, *CARDS]

    async def exercise(self, bridge: BridgeHarness) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        window = {"begin": now.isoformat(), "end": (now + timedelta(days=7)).isoformat()}
        final = await bridge.set(self.device, {"cards": dict.fromkeys(CARDS, window)})
        assert final["status"] == "succeeded", final
