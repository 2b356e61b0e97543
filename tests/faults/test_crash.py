"""Crash: a real ``locktwin run okai`` is SIGKILLed at random moments under 1,000 commands.

The OKAI simulator is served in this process on a real socket, so it outlives every bridge and
records every call (with its arrival time and ``expireTime``). The client re-sends a command with
the same transaction when no answer arrived within 3 s (the documented client behaviour). The
bridge restarts on the same store and client id, so its persistent session delivers what was
queued while it was down.

Proves: every transaction gets exactly one final outcome (repeated identically at most); no
switchLock reaches the vendor after its command expired; repeated vendor calls happen only for
idempotent commands (counted and printed).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import anyio
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, log, okai_bridge, read_store, start_bridge

pytestmark = pytest.mark.anyio

DEVICES = 100
COMMANDS = 1000
SEND_SECONDS = 30.0
SEED = 8
LONG_OUTAGE = 12.0


async def test_sigkill_under_load(mqtt_broker: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=DEVICES, bolt_seconds=0.2)
    imeis = sim.fleet.imeis
    base = f"lt-crash-{uuid.uuid4().hex[:8]}"
    kills_at = sorted(rng.uniform(3.0, SEND_SECONDS - 6.0) for _ in range(rng.randint(3, 5)))

    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai", resend_after=3.0)
        await tg.start(client.run)
        bridge = okai_bridge(broker_url=mqtt_broker, base=base, base_url=base_url, imeis=imeis, workdir=tmp_path)
        try:
            await start_bridge(bridge, client)
            tg.start_soon(client.resender)

            async def killer() -> None:
                t0 = time.monotonic()
                for n, at in enumerate(kills_at):
                    await anyio.sleep(max(0.0, t0 + at - time.monotonic()))
                    if not bridge.alive():
                        continue
                    bridge.kill()
                    # the last outage outlives the shortest commands: some expire while it is down
                    down = LONG_OUTAGE if n == len(kills_at) - 1 else rng.uniform(0.2, 2.0)
                    log(f"SIGKILL #{bridge.kills} at +{time.monotonic() - t0:.1f}s, down {down:.1f}s")
                    await anyio.sleep(down)
                    await start_bridge(bridge, client)

            async with anyio.create_task_group() as load:
                load.start_soon(killer)
                t0 = time.monotonic()
                for i in range(COMMANDS):
                    await anyio.sleep(max(0.0, t0 + i * SEND_SECONDS / COMMANDS - time.monotonic()))
                    await client.send_set(
                        imeis[rng.randrange(DEVICES)],
                        rng.choice(["LOCKED", "UNLOCKED"]),
                        expires_in=rng.uniform(10.0, 20.0),
                        issued_at=rng.random() < 0.3,
                    )
            # Every command lives at most 20 s; give replays and re-sends time beyond that.
            try:
                await client.wait_for(lambda: not client.unfinished(), timeout=75)
            except TimeoutError:
                missing = client.unfinished()
                raise AssertionError(
                    f"{len(missing)} transactions without a final answer, e.g. {missing[:5]}: "
                    f"{[client.answers[t].statuses for t in missing[:5]]}\n{bridge.log_tail()}"
                ) from None
            client.resending = False
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()

    # -- exactly one final outcome per transaction
    outcomes: Counter[str] = Counter()
    repeated_finals = 0
    for txn in client.sent:
        finals = client.answers[txn].finals
        assert len(finals) == 1, f"{txn}: {client.answers[txn].statuses}"
        outcomes[next(iter(finals))] += 1
        repeated_finals += sum(s in finals for s in client.answers[txn].statuses) - 1
    commands, journal = read_store(bridge.store_path())
    by_txn = {c["txn"]: c for c in commands.values()}
    # the store agrees with what the client was told
    for txn, answers in client.answers.items():
        if txn in client.sent and txn in by_txn and "rejected" not in answers.finals:
            assert answers.finals == {by_txn[txn]["status"]}, (txn, answers.statuses, by_txn[txn]["status"])

    # -- vendor calls: each matched to the command whose attempt the bridge journaled last before it
    sent_rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in journal:
        if row["entry"] == "command.sent":
            sent_rows[row["device"]].append((row["at"], row["command_id"]))
    calls = sim.calls_to(PATHS["switch_lock"])
    per_command: Counter[str] = Counter()
    late: list[str] = []
    beyond_expiry = 0
    for call in calls:
        device = str(call.params["imei"])
        candidates = [cid for at, cid in sent_rows[device] if at <= call.received_at]
        assert candidates, f"a switchLock on {device} at {call.received_at} with no attempt journaled before it"
        cmd = commands[candidates[-1]]
        assert call.params["operate"] == ("lock" if cmd["value"] == '"LOCKED"' else "unlock"), (call, cmd)
        per_command[cmd["id"]] += 1
        if call.received_at >= cmd["expires_at"]:
            late.append(f"{cmd['txn']}: arrived {call.received_at - cmd['expires_at']:.3f}s after expiry")
        if call.received_at + int(call.params["expireTime"]) > cmd["expires_at"] + 1.0:
            beyond_expiry += 1
    repeated = {cid: n for cid, n in per_command.items() if n > 1}
    for cid in repeated:
        assert commands[cid]["idempotent"], f"non-idempotent command {cid} called {per_command[cid]} times"
    # a command that ended "expired" never reached the vendor
    for cid, cmd in commands.items():
        if cmd["status"] == "expired":
            assert per_command[cid] == 0, f"{cmd['txn']} expired but the vendor got {per_command[cid]} calls"

    log(
        f"kills={bridge.kills} starts={bridge.starts} transactions={len(client.sent)} "
        f"client re-sends={client.resends} outcomes={dict(outcomes)} repeated final answers={repeated_finals}"
    )
    log(
        f"switchLock calls={len(calls)} for {len(per_command)} commands; commands called more than once="
        f"{len(repeated)} (extra calls={sum(repeated.values()) - len(repeated)}, all idempotent lock/unlock); "
        f"calls after expiry={len(late)}; calls whose expireTime outlives the command by >1s={beyond_expiry}"
    )
    assert bridge.kills >= 3
    assert not late, late[:10]
    assert outcomes["succeeded"] > 0
