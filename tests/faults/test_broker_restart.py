"""Broker restart under load: a private mosquitto (persistence on) is restarted while a real
``locktwin run okai`` has commands in flight.

Proves: QoS 1 and persistent sessions (the bridge's and the client's) lose no accepted command:
every accepted transaction gets exactly one final answer, including those that were still open
when the broker went away; the client reconnects and re-subscribes by itself; the retained topics
(bridge state, every device's state, twin and availability) are there again for a new subscriber.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import aiomqtt
import anyio
import pytest

from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, log, okai_bridge, start_bridge
from twin.broker import MosquittoBroker

pytestmark = pytest.mark.anyio

DEVICES = 20
COMMANDS = 200
SEND_SECONDS = 6.0


async def retained_snapshot(url: str, topics: list[str], expect: int, *, timeout: float = 15.0) -> dict[str, bytes]:
    """What a new subscriber (clean session) gets as retained messages."""
    host, port = url.removeprefix("mqtt://").split(":")
    seen: dict[str, bytes] = {}
    with anyio.move_on_after(timeout):
        async with aiomqtt.Client(host, int(port), identifier=f"snap-{uuid.uuid4().hex[:6]}") as client:
            for topic in topics:
                await client.subscribe(topic, qos=1)
            async for msg in client.messages:
                if msg.retain:
                    seen[msg.topic.value] = msg.payload if isinstance(msg.payload, bytes) else b""
                if len(seen) >= expect:
                    break
    return seen


async def test_broker_restart_under_load(tmp_path: Path) -> None:
    if not MosquittoBroker.available():
        pytest.skip("needs the mosquitto binary")
    rng = random.Random(2)
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    (tmp_path / "mosquitto").mkdir()
    broker.start()
    # a slow bolt and a slow cloud keep commands in flight across the restart
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=DEVICES, bolt_seconds=1.0, latency=0.2)
    imeis = sim.fleet.imeis
    base = f"lt-brk-{uuid.uuid4().hex[:8]}"
    try:
        async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
            client = Client(broker_url=broker.url, base=base, vendor="okai", resend_after=5.0)
            await tg.start(client.run)
            bridge = okai_bridge(broker_url=broker.url, base=base, base_url=base_url, imeis=imeis, workdir=tmp_path)
            try:
                await start_bridge(bridge, client)
                tg.start_soon(client.resender)
                open_at_restart: list[str] = []

                async def restart_midway() -> None:
                    await anyio.sleep(SEND_SECONDS / 2)
                    open_at_restart.extend(
                        t
                        for t in client.sent
                        if "accepted" in client.answers[t].statuses and not client.answers[t].finals
                    )
                    log(f"restarting mosquitto with {len(open_at_restart)} accepted commands still open")
                    await anyio.to_thread.run_sync(broker.restart)

                async with anyio.create_task_group() as load:
                    load.start_soon(restart_midway)
                    t0 = time.monotonic()
                    for i in range(COMMANDS):
                        await anyio.sleep(max(0.0, t0 + i * SEND_SECONDS / COMMANDS - time.monotonic()))
                        await client.send_set(
                            imeis[i % DEVICES], rng.choice(["LOCKED", "UNLOCKED"]), expires_in=rng.uniform(20, 30)
                        )
                try:
                    await client.wait_for(lambda: not client.unfinished(), timeout=60)
                except TimeoutError:
                    missing = client.unfinished()
                    raise AssertionError(
                        f"{len(missing)} without a final answer: {[client.answers[t].statuses for t in missing[:5]]}"
                        f"\n{bridge.log_tail()}"
                    ) from None
                topics = [f"{base}/okai/+/{leaf}" for leaf in ("state", "twin", "availability")]
                snapshot = await retained_snapshot(
                    broker.url, [*topics, f"{base}/bridge/okai/state"], expect=3 * DEVICES + 1
                )
            finally:
                bridge.stop()
                tg.cancel_scope.cancel()
    finally:
        broker.stop()

    accepted = [t for t in client.sent if "accepted" in client.answers[t].statuses]
    outcomes: dict[str, int] = {}
    for txn in client.sent:
        finals = client.answers[txn].finals
        assert len(finals) == 1, (txn, client.answers[txn].statuses)
        outcomes[next(iter(finals))] = outcomes.get(next(iter(finals)), 0) + 1
    log(
        f"broker restarted once; client connections={client.connections} (re-subscribed), re-sends={client.resends}; "
        f"accepted={len(accepted)}, open at the restart={len(open_at_restart)}, outcomes={outcomes}; "
        f"retained topics after the restart={len(snapshot)}"
    )
    assert client.connections >= 2
    assert open_at_restart, "no command was in flight when the broker restarted"
    assert all(client.answers[t].finals for t in open_at_restart)
    assert snapshot.get(f"{base}/bridge/okai/state") == b"online"
    for imei in imeis:
        for leaf in ("state", "twin", "availability"):
            assert f"{base}/okai/{imei}/{leaf}" in snapshot, (imei, leaf)
