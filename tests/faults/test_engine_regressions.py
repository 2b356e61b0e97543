"""Minimal reproductions of engine bugs the fault suite found (in-process, small and quick)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import PATHS
from bridges.okai.simulator import OkaiSimulator, serve_simulator
from bridges.okai.tests.helpers import USER_KEY, settings_for
from twin.config import BridgeOptions
from twin.testing import BridgeHarness

pytestmark = pytest.mark.anyio


async def test_command_waiting_for_a_slot_is_never_sent_after_it_expired(mqtt_broker: str, tmp_path: Path) -> None:
    """Found by test_vendor_outage[hang]: with the concurrency cap full of hung calls, a command
    waited for a slot past its expiry and was then sent to the vendor (``expireTime`` 1) anyway."""
    sim = OkaiSimulator(user_key=USER_KEY, devices=2, bolt_seconds=0.1)
    slow, quick = sim.fleet.imeis
    async with serve_simulator(sim) as base_url:
        settings = settings_for(base_url, sim, poll_interval=None, timeout=5.0)  # no poll takes the slot
        async with BridgeHarness(
            adapter=OkaiAdapter(settings=settings),
            broker_url=mqtt_broker,
            data_dir=tmp_path,
            options=BridgeOptions(max_in_flight=1),
        ) as h:
            sim.fleet.latency = 3.0  # the vendor hangs: the only slot is held for 3 s
            await h.publish(h.topic(slow, "set"), {"lock": "UNLOCKED", "expires_in": 20, "transaction": "slow"})
            # the slow command's worker holds the slot from the moment it is sent
            await h.wait_for(lambda: any(e["data"]["to"] == "sent" for e in h.events(slow, "command")))
            final = await h.set(quick, {"lock": "UNLOCKED", "expires_in": 1}, timeout=10)
            assert final["status"] == "expired", final
            sim.fleet.latency = 0.0
            # A late call of the quick command would go out as soon as the slot is free, before the
            # slow command's confirmation read, which needs the slot too: once the slow one has
            # succeeded, a late call would have been answered (and recorded) already.
            slow_final = await h.final(slow, "slow", timeout=15)
            assert slow_final["status"] == "succeeded", slow_final
    late = [c for c in sim.calls_to(PATHS["switch_lock"]) if c.params["imei"] == quick]
    assert late == [], f"{len(late)} switchLock after the command expired: {late[0].params}"


async def test_a_timed_out_call_is_not_answered_expired(mqtt_broker: str, tmp_path: Path) -> None:
    """Found by test_vendor_outage[hang] (6 of 6 short commands)."""
    sim = OkaiSimulator(user_key=USER_KEY, devices=1, bolt_seconds=0.1)
    (imei,) = sim.fleet.imeis
    async with serve_simulator(sim) as base_url:
        settings = settings_for(base_url, sim, poll_interval=None, timeout=1.0)
        adapter = OkaiAdapter(settings=settings)
        async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
            sim.fleet.latency = 2.5  # the cloud answers after the client gave up, and carries it out
            final = await h.set(imei, {"lock": "UNLOCKED", "expires_in": 2}, timeout=10)
            with anyio.fail_after(5):  # the scenario happened: the cloud took the call after all
                while not sim.fleet[imei].commands:  # noqa: ASYNC110 - the simulator has no event for it
                    await anyio.sleep(0.05)
    assert final["status"] != "expired", final
