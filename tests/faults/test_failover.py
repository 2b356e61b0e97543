"""Failover (issue 22): three real ``locktwin run okai`` instances on one PostgreSQL database and a real
mosquitto, 1,000 commands over 100 devices; instances are SIGKILLed at random moments and started
again, a fourth joins midway, and one is paused (SIGSTOP) for longer than the lease, then woken.

Proves: every transaction gets exactly one final answer (repeated identically at most); no
switchLock reaches the vendor after its command expired; repeated calls only for idempotent
commands; the paused instance writes nothing under a lease it no longer holds (every journal row it
wrote carries an epoch it held, written before the next holder took that partition) and rejoins;
every device is served at the end (a last lock of each succeeds). Prints the takeover times.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults import pg
from tests.faults.common import BridgeProcess, Client, log

pytestmark = pytest.mark.anyio

DEVICES = 100
COMMANDS = 1000
SEND_SECONDS = 30.0
LEASE = 4.0
PARTITIONS = 16
SEED = 22


def instance(name: str, *, url: str, broker: str, base: str, sim: str, imeis: list[str], tmp: Path) -> BridgeProcess:
    return BridgeProcess(
        vendor="okai",
        broker_url=broker,
        data_dir=tmp / name,
        base=base,
        env={
            "LOCKTWIN_STORE": url,
            "LOCKTWIN_CLUSTER__INSTANCE": name,
            "LOCKTWIN_CLUSTER__PARTITIONS": str(PARTITIONS),
            "LOCKTWIN_CLUSTER__LEASE_SECONDS": str(LEASE),
            "LOCKTWIN_OKAI_USER_KEY": DEMO_USER_KEY,
            "LOCKTWIN_OKAI_BASE_URL": sim,
            "LOCKTWIN_OKAI_DEVICES": json.dumps(imeis),
            "LOCKTWIN_OKAI_TIMEOUT": "5",
            "LOCKTWIN_OKAI_POLL_INTERVAL": "60",
        },
        log_path=tmp / f"{name}.log",
    )


def held(client: Client, base: str) -> dict[str, dict[str, Any]]:
    out = {}
    for topic, raw in client.retained.items():
        if topic.startswith(f"{base}/bridge/okai/instances/") and topic.endswith("/partitions") and raw:
            doc = json.loads(raw)
            out[doc["instance"]] = doc
    return out


def covered(client: Client, base: str, alive: set[str]) -> bool:
    docs = {k: v for k, v in held(client, base).items() if k in alive}
    parts = sorted(p for d in docs.values() for p in d["partitions"])
    return parts == list(range(PARTITIONS)) and any(d["intake"] for d in docs.values())


async def test_failover_under_load(mqtt_broker: str, tmp_path: Path) -> None:
    pg.require()
    rng = random.Random(SEED)
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=DEVICES, bolt_seconds=0.2)
    imeis = sim.fleet.imeis
    base = f"lt-fo-{uuid.uuid4().hex[:8]}"
    schema = base.replace("-", "_") + "_okai"
    takeovers: list[float] = []
    pause_takeovers: list[float] = []
    paused_at = woke_at = 0.0
    with pg.fresh_database() as url:
        async with serve_simulator(sim) as sim_url, anyio.create_task_group() as tg:
            client = Client(broker_url=mqtt_broker, base=base, vendor="okai", resend_after=3.0)
            await tg.start(client.run)
            make = lambda n: instance(n, url=url, broker=mqtt_broker, base=base, sim=sim_url, imeis=imeis, tmp=tmp_path)  # noqa: E731
            bridges = {n: make(n) for n in ("i1", "i2", "i3", "i4")}
            try:
                for name in ("i1", "i2", "i3"):
                    bridges[name].start()
                await client.wait_for(lambda: covered(client, base, {"i1", "i2", "i3"}), timeout=40)
                tg.start_soon(client.resender)

                async def chaos() -> None:
                    nonlocal paused_at, woke_at
                    t0 = time.monotonic()
                    plan = sorted(rng.uniform(2.0, SEND_SECONDS - 4.0) for _ in range(4))
                    for n, at in enumerate(plan):
                        await anyio.sleep(max(0.0, t0 + at - time.monotonic()))
                        if n == 2:
                            bridges["i4"].start()
                            log(f"i4 joins at +{time.monotonic() - t0:.1f}s")
                            continue
                        victim = bridges[rng.choice(["i1", "i2", "i3"])]
                        owned = held(client, base).get(victim.data_dir.name, {}).get("partitions", [])
                        killed = time.time()
                        victim.kill()
                        log(f"SIGKILL {victim.data_dir.name} at +{time.monotonic() - t0:.1f}s (held {owned})")
                        tg.start_soon(measure_takeover, victim.data_dir.name, killed, takeovers)
                        await anyio.sleep(rng.uniform(0.5, 2.0))
                        victim.start()
                    # the pause: longer than the lease
                    sleeper = bridges["i2"]
                    # it must hold partitions to lose (it may have just been restarted)
                    await client.wait_for(lambda: held(client, base).get("i2", {}).get("partitions"), timeout=20)
                    await anyio.sleep(0.5)
                    paused_at = time.time()
                    sleeper.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                    log(f"SIGSTOP i2 for {LEASE + 3:.0f}s")
                    tg.start_soon(measure_takeover, "i2", paused_at, pause_takeovers)
                    await anyio.sleep(LEASE + 3.0)
                    sleeper.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                    woke_at = time.time()

                async def measure_takeover(name: str, killed: float, into: list[float]) -> None:
                    with psycopg.connect(url) as conn:
                        deadline = time.monotonic() + LEASE + 10
                        while time.monotonic() < deadline:
                            row = conn.execute(
                                f'SELECT min(EXTRACT(EPOCH FROM at)) FROM "{schema}".lease_log '
                                "WHERE previous LIKE %s AND EXTRACT(EPOCH FROM at) > %s",
                                (f"{name}#%", killed),
                            ).fetchone()
                            if row and row[0] is not None:
                                into.append(float(row[0]) - killed)
                                return
                            await anyio.sleep(0.1)

                async with anyio.create_task_group() as load:
                    load.start_soon(chaos)
                    t0 = time.monotonic()
                    for i in range(COMMANDS):
                        await anyio.sleep(max(0.0, t0 + i * SEND_SECONDS / COMMANDS - time.monotonic()))
                        await client.send_set(
                            imeis[rng.randrange(DEVICES)],
                            rng.choice(["LOCKED", "UNLOCKED"]),
                            expires_in=rng.uniform(10.0, 20.0),
                            issued_at=rng.random() < 0.3,
                        )
                try:
                    await client.wait_for(lambda: not client.unfinished(), timeout=60)
                except TimeoutError:
                    missing = client.unfinished()
                    raise AssertionError(
                        f"{len(missing)} transactions without a final answer, e.g. {missing[:5]}: "
                        f"{[client.answers[t].statuses for t in missing[:5]]}\n"
                        + "\n".join(b.log_tail(15) for b in bridges.values())
                    ) from None
                # every device served at the end: one more lock of each succeeds
                alive = {"i1", "i2", "i3", "i4"}
                await client.wait_for(
                    lambda: covered(client, base, alive) and held(client, base)["i2"]["partitions"], timeout=30
                )
                final = {d: await client.send_set(d, "LOCKED", expires_in=20.0, issued_at=True) for d in imeis}
                await client.wait_for(lambda: all(client.answers[t].finals for t in final.values()), timeout=40)
                client.resending = False
                served = Counter(next(iter(client.answers[t].finals)) for t in final.values())
                assert served == {"succeeded": DEVICES}, served
            finally:
                for b in bridges.values():
                    if b.alive():
                        b.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                    b.stop()
                tg.cancel_scope.cancel()

        with psycopg.connect(url) as conn:
            cols = "id, txn, status, expires_at, idempotent, value"
            commands = {r[0]: r for r in conn.execute(f'SELECT {cols} FROM "{schema}".commands').fetchall()}
            journal = conn.execute(
                f'SELECT at, device, command_id, entry, instance, epoch FROM "{schema}".journal ORDER BY seq'
            ).fetchall()
            log_rows = conn.execute(
                f'SELECT partition, epoch, owner, EXTRACT(EPOCH FROM at) FROM "{schema}".lease_log ORDER BY seq'
            ).fetchall()

    # -- exactly one final answer per transaction
    outcomes: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for txn in client.sent:
        finals = client.answers[txn].finals
        assert len(finals) == 1, f"{txn}: {client.answers[txn].statuses}"
        outcomes[next(iter(finals))] += 1
        refused.update(b["error"]["code"] for b in client.answers[txn].bodies if b.get("status") == "rejected")
    by_txn = {r[1]: r for r in commands.values()}
    for txn, answers in client.answers.items():
        if txn in by_txn and "rejected" not in answers.finals:
            assert answers.finals == {by_txn[txn][2]}, (txn, answers.statuses, by_txn[txn][2])

    # -- vendor calls: each matched to the command whose attempt was journaled last before it
    sent_rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for at, device, command_id, entry, _, _ in journal:
        if entry == "command.sent":
            sent_rows[device].append((at, command_id))
    per_command: Counter[str] = Counter()
    late = []
    for call in sim.calls_to(PATHS["switch_lock"]):
        candidates = [cid for at, cid in sent_rows[str(call.params["imei"])] if at <= call.received_at]
        assert candidates, f"a switchLock with no attempt journaled before it: {call}"
        cmd = commands[candidates[-1]]
        per_command[cmd[0]] += 1
        if call.received_at >= cmd[3]:
            late.append(f"{cmd[1]}: {call.received_at - cmd[3]:.3f}s after expiry")
    assert not late, late[:10]
    for cid, n in per_command.items():
        assert n == 1 or commands[cid][4], f"non-idempotent command {cid} called {n} times"
    for cid, cmd in commands.items():
        if cmd[2] == "expired":
            assert per_command[cid] == 0, f"{cmd[1]} expired but the vendor got {per_command[cid]} calls"

    # -- fencing: every journal row was written under a lease its writer held at that moment
    held_by: dict[tuple[int, int], tuple[str, float]] = {}
    until: dict[tuple[int, int], float] = {}
    for partition, epoch, owner, at in log_rows:
        held_by[(partition, epoch)] = (owner, float(at))
        if (partition, epoch - 1) in held_by:
            until[(partition, epoch - 1)] = float(at)
    stale = []
    partition_of = {d: __import__("twin.shard", fromlist=["Shard"]).Shard.slot(d, PARTITIONS) for d in imeis}
    for at, device, _, entry, writer, epoch in journal:
        if device is None or epoch is None:
            continue
        key = (partition_of[device], epoch)
        owner, _ = held_by.get(key, ("?", 0.0))
        if owner != writer or at > until.get(key, float("inf")) + 0.05:
            stale.append((entry, device, writer, epoch, owner))
    assert not stale, stale[:10]
    paused_rows = [r for r in journal if str(r[4]).startswith("i2#") and r[0] > woke_at]
    log(
        f"transactions={len(client.sent)} outcomes={dict(outcomes)} re-sends={client.resends} "
        f"switchLock calls={sum(per_command.values())} repeated={sum(n > 1 for n in per_command.values())} "
        f"refusals={dict(refused)} takeovers after SIGKILL (s)={[round(t, 2) for t in takeovers]}, "
        f"after SIGSTOP={[round(t, 2) for t in pause_takeovers]} (lease {LEASE}s); paused {woke_at - paused_at:.1f}s, "
        f"rows i2 wrote after waking={len(paused_rows)} (all under leases acquired after it woke)"
    )
    assert takeovers and max(takeovers) <= LEASE + 2.0, takeovers
    assert pause_takeovers and LEASE - 1.0 <= pause_takeovers[0] <= LEASE + 2.0, pause_takeovers
    assert outcomes["succeeded"] > 0
    # every device exists: a refusal may only be about the command itself (never UNKNOWN_DEVICE)
    assert set(refused) <= {"EXPIRED", "TRANSACTION_REUSED", "DEVICE_BUSY"}, refused
