"""Exactly one final answer per transaction across a restart (a real ``locktwin run okai``).

A command accepted while its scooter is offline waits to be retried; the bridge stops (SIGTERM, or
SIGKILL) and the command expires while it is down. At the next start the bridge answers
``expired`` (or ``failed``, when SIGKILL caught a call of it), once: a subscriber counts every answer
of the transaction, through a second, clean restart.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, okai_bridge, start_bridge

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_expired_while_down_is_answered_once(mqtt_broker: str, tmp_path: Path, stop: str) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=2, bolt_seconds=0.1, delivery_seconds=0.0)
    offline, other = sim.fleet.imeis
    sim.fleet[offline].set_online(False)
    base = f"lt-once-{uuid.uuid4().hex[:8]}"
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker, base=base, base_url=base_url, imeis=sim.fleet.imeis, workdir=tmp_path
        )
        try:
            await start_bridge(bridge, client)
            txn = await client.send_set(offline, "UNLOCKED", expires_in=3.0, issued_at=True)
            await client.wait_for(lambda: client.answers[txn].statuses == ["accepted"], timeout=20)
            await client.wait_for(lambda: len(sim.calls_to(PATHS["switch_lock"])) >= 1, timeout=20)  # refused: offline
            if stop == "sigkill":
                bridge.kill()
            else:
                bridge.stop()
            await anyio.sleep(3.5)  # the command's time runs out while the bridge is down
            await start_bridge(bridge, client)
            probe = await client.send_set(other, "UNLOCKED", expires_in=20.0, issued_at=True)
            await client.wait_for(lambda: "succeeded" in client.answers[probe].statuses, timeout=30)
            # the answers the bridge sends at start (and again on reconnect) precede the probe's
            await client.wait_for(lambda: client.answers[txn].finals, timeout=10)
            bridge.stop()  # a clean stop flushes the marks: nothing is sent again after this start
            await start_bridge(bridge, client)
            again = await client.send_set(other, "LOCKED", expires_in=20.0, issued_at=True)
            await client.wait_for(lambda: "succeeded" in client.answers[again].statuses, timeout=30)
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()
    # "expired" when it was waiting to be retried; "failed" (NOT_CONFIRMED) when SIGKILL caught its call
    statuses = client.answers[txn].statuses
    assert statuses in (["accepted", "expired"], ["accepted", "failed"]), statuses
    assert all(c.params["imei"] == offline for c in sim.calls_to(PATHS["switch_lock"])[:1])
