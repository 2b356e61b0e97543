"""The simulator as the demo, ``locktwin simulate`` and compose run it (``SmartcarAdapter.simulator``)."""

from __future__ import annotations

from typing import Any

from twin.adapter import SimulatorKit

from . import DEMO_CODE, SmartcarSimulator

__all__ = ["demo_kit"]


def demo_kit(*, devices: int) -> SimulatorKit:
    """A simulator whose public demo code links its first user (tokens survive its restarts)."""
    sim = SmartcarSimulator(devices=devices, demo_code=DEMO_CODE)

    def settings(url: str) -> dict[str, Any]:
        return {
            "client_id": sim.oauth.client_id,
            "client_secret": sim.oauth.client_secret,
            "base_url": f"{url}/v2.0",
            "auth_url": f"{url}/oauth/token",
            "connect_url": f"{url}/oauth/authorize",
            "auth_code": DEMO_CODE,
            "poll_interval": 60.0,
            "telemetry_min_interval": 30.0,
        }

    return SimulatorKit(app=sim.app, settings=settings, device_ids=sim.fleet.ids, limits=sim.limits.account)
