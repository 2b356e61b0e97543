"""A peer, side by side: the same ``/set`` through locktwin and through a plain Node-RED flow.

    python -m bench.peer [--quick]

The flow is what a user would write (``mqtt in`` -> a function node that signs the OKAI request ->
``http request`` -> a function node for the answer -> ``mqtt out``), on Node-RED installed from npm
as the tests do (``.cache/node-red``), on the same private mosquitto and the same OKAI simulator
(a process of its own, zero latency, bolt and delivery at zero). The bridge is a ``locktwin run
okai`` process of its own, with its default options. Rounds alternate between the two.

The flow confirms nothing and stores nothing: its only answer says the vendor accepted the call.
Goals: locktwin's ``accepted`` before the flow's answer (p50, one command in flight); with the
confirmation timing learned (30 commands first), ``succeeded`` within 1.5x of the flow's answer;
CPU per command (bridge or Node-RED, broker and simulator together, 200 in flight) within 2x.
Also reported: what each does per command (HTTP calls, MQTT messages through the broker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import anyio

from bench.command import NODELAY
from bench.common import Report, percentile, private_broker
from bench.storm import _cpu_seconds, _limits, simulator
from bridges.okai.simulator import DEMO_SIGN_KEY, DEMO_USER_KEY, imei_for
from twin.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
SIGN = """\
// sign the OKAI switchLock request (md5 of the sorted parameters and the sign key), as its document says
const crypto = global.get('crypto');
const body = JSON.parse(msg.payload);
const device = msg.topic.split('/')[2];
const params = {imei: device, operate: body.lock === 'LOCKED' ? 'lock' : 'unlock', expireTime: 30};
const ident = {userKey: env.get('OKAI_USER_KEY'), timestamp: String(Date.now())};
const all = Object.assign({}, params, ident);
const canonical = Object.keys(all).sort().map(k => k + '=' + all[k]).join('&');
ident.sign = crypto.createHash('md5').update(canonical + env.get('OKAI_SIGN_KEY')).digest('hex');
msg.headers = Object.assign({'content-type': 'application/json'}, ident);
msg.url = env.get('OKAI_URL') + '/scooter/control/switchLock';
msg.payload = params;
msg.transaction = body.transaction;
msg.device = device;
return msg;
"""
ANSWER = """\
const ok = msg.statusCode === 200 && msg.payload && String(msg.payload.code) === '200';
msg.topic = 'peer/okai/' + msg.device + '/response/set';
msg.payload = JSON.stringify({transaction: msg.transaction, status: ok ? 'succeeded' : 'failed',
    error: ok ? null : {code: 'VENDOR_ERROR', vendor_code: msg.payload && msg.payload.code}});
return msg;
"""
SETTINGS_JS = """\
module.exports = {
    uiHost: "127.0.0.1", flowFile: "flows.json", credentialSecret: false, httpAdminRoot: false,
    disableEditor: true, functionGlobalContext: { crypto: require("crypto") },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    telemetry: { enabled: false, updateNotification: false }, diagnostics: { enabled: false, ui: false },
};
"""


def flow(broker_port: int) -> list[dict[str, Any]]:
    tab = "peer-tab"
    return [
        {"id": tab, "type": "tab", "label": "peer"},
        {"id": "peer-broker", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1", "port": str(broker_port),
         "clientid": "peer-flow", "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
         "cleansession": True},
        {"id": "peer-in", "type": "mqtt in", "z": tab, "name": "set", "topic": "peer/okai/+/set", "qos": "1",
         "datatype": "utf8", "broker": "peer-broker", "nl": False, "rap": False, "inputs": 0, "wires": [["peer-sign"]]},
        {"id": "peer-sign", "type": "function", "z": tab, "name": "sign switchLock", "func": SIGN, "outputs": 1,
         "wires": [["peer-http"]]},
        {"id": "peer-http", "type": "http request", "z": tab, "name": "switchLock", "method": "POST", "ret": "obj",
         "paytoqs": "ignore", "url": "", "persist": True, "wires": [["peer-answer"]]},
        {"id": "peer-answer", "type": "function", "z": tab, "name": "answer", "func": ANSWER, "outputs": 1,
         "wires": [["peer-out"]]},
        {"id": "peer-out", "type": "mqtt out", "z": tab, "name": "response", "topic": "", "qos": "1", "retain": "false",
         "broker": "peer-broker", "wires": []},
    ]  # fmt: skip


@contextmanager
def node_red(work: Path, broker_port: int, base_url: str) -> Iterator[int]:
    from tests.test_node_red import install_node_red  # the pinned Node-RED the tests use

    red = install_node_red()
    userdir = work / "node-red"
    userdir.mkdir()
    (userdir / "flows.json").write_text(json.dumps(flow(broker_port)))
    (userdir / "settings.js").write_text(SETTINGS_JS)
    env = {**os.environ, "OKAI_USER_KEY": DEMO_USER_KEY, "OKAI_SIGN_KEY": DEMO_SIGN_KEY, "OKAI_URL": base_url}
    command = ["node", str(red), "--userDir", str(userdir), "--settings", str(userdir / "settings.js")]
    with (userdir / "log").open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(free_port()), "flows.json"], cwd=userdir, env=env, stdout=log, stderr=log
        )
    try:
        yield proc.pid
    except BaseException:
        sys.stderr.write((userdir / "log").read_text()[-3000:])
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def bridge(work: Path, broker_port: int, base_url: str, devices: list[str]) -> Iterator[int]:
    config = work / "locktwin.toml"
    config.write_text(
        f'data_dir = "{work / "data"}"\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker_port}"\n'
        "[homeassistant]\nenabled = false\n"
        f'[vendors.okai]\nbase_url = "{base_url}"\npoll_interval = 3600.0\ndevices = {json.dumps(devices)}\n'
    )
    env = {**os.environ, "LOCKTWIN_OKAI_USER_KEY": DEMO_USER_KEY, "LOCKTWIN_OKAI_SIGN_KEY": DEMO_SIGN_KEY}
    command = [sys.executable, "-m", "twin.cli", "run", "okai", "--config", str(config)]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Commander:
    """Sends /set to either tree and keeps the answers' receive times."""

    client: aiomqtt.Client
    answers: dict[str, dict[str, float]] = field(default_factory=dict)
    waiting: dict[str, anyio.Event] = field(default_factory=dict)
    published: int = 0

    async def listen(self) -> None:
        async for message in self.client.messages:
            now = time.perf_counter()
            topic = message.topic.value
            if topic.startswith("$SYS/"):
                if topic.endswith("publish/messages/received"):
                    self.published = int(bytes(message.payload))  # type: ignore[arg-type]
                continue
            doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            tx, status = doc.get("transaction"), doc.get("status")
            self.answers.setdefault(tx, {}).setdefault(status, now)
            if status in ("succeeded", "failed", "expired", "rejected") and tx in self.waiting:
                self.waiting.pop(tx).set()

    async def command(self, tree: str, device: str, lock: str) -> dict[str, float]:
        tx = uuid.uuid4().hex
        self.waiting[tx] = done = anyio.Event()
        sent = time.perf_counter()
        body = json.dumps({"lock": lock, "transaction": tx, "expires_in": 30})
        await self.client.publish(f"{tree}/okai/{device}/set", body, qos=1)
        with anyio.move_on_after(30):
            await done.wait()
        if not done.is_set():
            raise RuntimeError(f"{tree}: no final answer to a /set of {device} within 30 s")
        return {status: at - sent for status, at in self.answers.pop(tx).items()}


async def measure(quick: bool, report: Report) -> dict[str, Any]:
    rounds, per_round, concurrent_rounds, in_flight = (6, 10, 3, 200) if quick else (10, 20, 5, 200)
    devices = [imei_for(i + 1) for i in range(in_flight)]
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="locktwin-peer-") as tmp,
        private_broker(Path(tmp) / "mq", "sys_interval 1\n") as broker,
    ):
        work = Path(tmp)
        broker_pid = broker._proc.pid  # type: ignore[union-attr]
        async with simulator(in_flight, 0.0, 0.0) as (base, limits_url, sim_pid):
            with bridge(work, broker.port, base, devices) as bridge_pid, node_red(work, broker.port, base) as red_pid:
                async with aiomqtt.Client(
                    "127.0.0.1", broker.port, socket_options=NODELAY, max_queued_incoming_messages=0
                ) as client:
                    client.pending_calls_threshold = 100_000
                    await client.subscribe(
                        [("locktwin/okai/+/response/set", 1), ("peer/okai/+/response/set", 1),
                         ("$SYS/broker/publish/messages/received", 0)]
                    )  # fmt: skip
                    cmd = Commander(client)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cmd.listen)
                        await anyio.sleep(6)  # the bridge's first status reads of its fleet (5 s spread) are done
                        for i in range(30):  # warm-up; locktwin learns when the scooters can be read
                            for tree in ("locktwin", "peer"):
                                await cmd.command(tree, devices[i % 10], "LOCKED" if i % 2 else "UNLOCKED")
                        seq: dict[str, list[dict[str, float]]] = {"locktwin": [], "peer": []}
                        for r in range(rounds):
                            order = ("peer", "locktwin") if r % 2 == 0 else ("locktwin", "peer")
                            for tree in order:
                                for i in range(per_round):
                                    lock = "LOCKED" if (r * per_round + i) % 2 else "UNLOCKED"
                                    seq[tree].append(await cmd.command(tree, devices[i % 10], lock))
                        pids = {"locktwin": bridge_pid, "peer": red_pid}
                        totals = {t: {"s": 0.0, "proc": 0.0, "broker": 0.0, "sim": 0.0, "msgs": 0, "http": 0}
                                  for t in pids}  # fmt: skip
                        for r in range(concurrent_rounds):
                            order = ("peer", "locktwin") if r % 2 == 0 else ("locktwin", "peer")
                            for tree in order:
                                await anyio.sleep(1.2)  # the broker's $SYS counters are a second old
                                msgs, http = cmd.published, _limits(limits_url)["admitted"]
                                cpu = (_cpu_seconds(pids[tree]), _cpu_seconds(broker_pid), _cpu_seconds(sim_pid))
                                started = time.perf_counter()
                                lock = "LOCKED" if r % 2 else "UNLOCKED"
                                async with anyio.create_task_group() as burst:
                                    for device in devices:
                                        burst.start_soon(cmd.command, tree, device, lock)
                                took = time.perf_counter() - started
                                after = (_cpu_seconds(pids[tree]), _cpu_seconds(broker_pid), _cpu_seconds(sim_pid))
                                await anyio.sleep(1.2)
                                t = totals[tree]
                                t["s"] += took
                                t["proc"] += after[0] - cpu[0]
                                t["broker"] += after[1] - cpu[1]
                                t["sim"] += after[2] - cpu[2]
                                t["msgs"] += cmd.published - msgs
                                t["http"] += _limits(limits_url)["admitted"] - http
                        tg.cancel_scope.cancel()
    commands = concurrent_rounds * in_flight
    ms = 1000.0
    accepted = [a["accepted"] for a in seq["locktwin"] if "accepted" in a]
    succeeded = [a["succeeded"] for a in seq["locktwin"] if "succeeded" in a]
    answered = [a["succeeded"] for a in seq["peer"] if "succeeded" in a]
    report.value("peer: commands each, one in flight, in alternating rounds", len(seq["locktwin"]))
    report.ratio("peer: locktwin accepted p50 over the flow's answer p50 (goal: before it)",
                 percentile(accepted, 50) * ms, percentile(answered, 50) * ms, "< 1", " ms")  # fmt: skip
    report.ratio("peer: locktwin succeeded p50 over the flow's answer p50",
                 percentile(succeeded, 50) * ms, percentile(answered, 50) * ms, "<= 1.5", " ms")  # fmt: skip
    lt, pr = totals["locktwin"], totals["peer"]
    report.ratio(f"peer: commands/s, {in_flight} in flight (locktwin over the flow)",
                 commands / lt["s"], commands / pr["s"], "", " cmd/s")  # fmt: skip
    cpu_lt = (lt["proc"] + lt["broker"] + lt["sim"]) / commands * ms
    cpu_pr = (pr["proc"] + pr["broker"] + pr["sim"]) / commands * ms
    report.ratio("peer: CPU per command, bridge or flow + broker + simulator", cpu_lt, cpu_pr, "<= 2", " ms")
    for name, t in (("locktwin", lt), ("flow", pr)):
        report.value(
            f"peer {name}: per command CPU ms bridge/flow {t['proc'] / commands * ms:.2f}, broker "
            f"{t['broker'] / commands * ms:.2f}, simulator {t['sim'] / commands * ms:.2f}; MQTT messages "
            f"into the broker {t['msgs'] / commands:.1f}; HTTP calls {t['http'] / commands:.2f}",
            round((t["proc"] + t["broker"] + t["sim"]) / commands * ms, 2),
            " ms",
        )
    figures.update(totals=totals, commands=commands)
    return figures


async def main(quick: bool) -> Report:
    report = Report(name="peer")
    await measure(quick, report)
    report.write()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.quick)
