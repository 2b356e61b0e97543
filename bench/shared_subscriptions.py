"""What a real mosquitto does with a shared subscription's messages when a member dies (issue 22).

Two members of ``$share/g/<topic>/#`` run as processes of their own; one is killed with SIGKILL.
Asked of the broker, each with a persistent session (session expiry 3600 s) and with a clean one:

1. QoS 1 messages in flight to the member that dies (delivered, never acknowledged: it takes them
   with manual acknowledgement and never sends a PUBACK): are they given to the other member?
2. messages published after it died, while its session lives on: do they all go to the live member,
   or does the dead member's session keep its turn of the round robin?
3. when the dead member comes back (same client id): what does it get?

``python -m bench.shared_subscriptions`` prints the counts and writes
``bench/results/shared_subscriptions.json``. The design of twin.cluster rests on what it finds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from twin.broker import MosquittoBroker

RESULTS = Path(__file__).parent / "results" / "shared_subscriptions.json"
N = 20

_MEMBER = r"""
import sys, time
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, cid, filt, expiry, ack = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "ack"
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5, manual_ack=True)
def on_message(cl, ud, msg):
    print(msg.payload.decode(), flush=True)
    if ack:
        cl.ack(msg.mid, msg.qos)
def on_connect(cl, ud, flags, rc, props):
    cl.subscribe(filt, qos=1)
    print("connected", flush=True)
c.on_message = on_message
c.on_connect = on_connect
props = Properties(PacketTypes.CONNECT)
props.SessionExpiryInterval = expiry
c.connect("127.0.0.1", port, clean_start=False, properties=props)
c.loop_forever()
"""


def _member(port: int, cid: str, filt: str, expiry: int, *, ack: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, str(port), cid, filt, str(expiry), "ack" if ack else "noack"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "connected":
            time.sleep(0.3)  # the SUBACK
            return proc
        time.sleep(0.02)
    raise RuntimeError("member did not connect")


def _read(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    out = []
    while line := proc.stdout.readline():
        if line.strip() and line.strip() != "connected":
            out.append(line.strip())
    return out


def _publish(port: int, topic: str, payloads: list[str]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def run_case(port: int, expiry: int) -> dict[str, Any]:
    base = f"ss-{uuid.uuid4().hex[:6]}"
    filt = f"$share/g/{base}/#"
    dying = _member(port, f"{base}-a", filt, expiry, ack=False)  # takes messages, never acknowledges
    live = _member(port, f"{base}-b", filt, expiry, ack=True)
    before = [f"before-{i}" for i in range(N)]
    _publish(port, f"{base}/x", before)
    time.sleep(0.5)
    got_dying = _read(dying)
    dying.send_signal(signal.SIGKILL)
    dying.wait()
    time.sleep(0.5)
    after = [f"after-{i}" for i in range(N)]
    _publish(port, f"{base}/x", after)
    time.sleep(1.0)
    got_live = _read(live)
    back = _member(port, f"{base}-a", filt, expiry, ack=True)
    time.sleep(1.0)
    got_back = _read(back)
    for p in (live, back):
        p.send_signal(signal.SIGKILL)
        p.wait()
    unacked = set(got_dying)
    return {
        "session_expiry": expiry,
        "in_flight_to_dead_member": len(unacked),
        "of_those_given_to_live_member": len(unacked & set(got_live)),
        "of_those_given_back_to_returning_member": len(unacked & set(got_back)),
        "published_after_death": N,
        "after_death_to_live_member": len(set(after) & set(got_live)),
        "after_death_kept_for_dead_member_then_given_on_return": len(set(after) & set(got_back)),
        "after_death_never_delivered": len(set(after) - set(got_live) - set(got_back)),
    }


def main() -> None:
    broker = MosquittoBroker()
    broker.start()
    try:
        cases = [run_case(broker.port, 3600), run_case(broker.port, 0)]
    finally:
        broker.stop()
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout.splitlines()
    result = {"broker": mosquitto[0] if mosquitto else "mosquitto", "cases": cases}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
