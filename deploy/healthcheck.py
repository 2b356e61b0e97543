"""Container health of one bridge: its retained ``<base>/bridge/<vendor>/state`` says ``online``.

    python /usr/local/lib/locktwin/healthcheck.py <vendor> [--config FILE]

Reads the broker address, credentials and base topic the way the bridge does (the TOML file plus
``LOCKTWIN_*`` variables), connects with a client id of its own, and exits 0 when the bridge's
state is ``online``, 1 otherwise (``offline``, never announced, or no broker). The bridge's last
will turns the state ``offline`` when its connection dies, so this checks the bridge end to end.

No waiting on a clock for an absent message: after subscribing to the state, it publishes a probe
to its own reply topic (``locktwin-replies/<user>/...``, see mosquitto/README.md) and subscribes to
it too; the broker sends retained messages at subscribe time, so if the probe comes back first
there is no retained state.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from twin.config import load_settings

TIMEOUT = 10.0


def check(vendor: str, config: Path | None) -> bool:
    settings = load_settings(config)
    broker = settings.mqtt.for_vendor(vendor)  # the bridge's own user (bridge-{vendor})
    state_topic = f"{settings.base_topic}/bridge/{vendor}/state"
    user = broker.username or "anonymous"
    probe_topic = f"locktwin-replies/{user}/health-{uuid.uuid4().hex}"
    done = threading.Event()
    result: dict[str, bytes | None] = {"state": None}

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"locktwin-health-{vendor}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.secret())

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            done.set()
            return
        c.subscribe(state_topic, qos=1)
        c.subscribe(probe_topic, qos=1)
        c.publish(probe_topic, b"probe", qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == state_topic:
            result["state"] = bytes(msg.payload)
        elif msg.topic == probe_topic:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError as exc:
        sys.stderr.write(f"healthcheck: {broker.url}: {exc}\n")
        return False
    client.loop_start()
    try:
        done.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    state = result["state"]
    if state != b"online":
        sys.stderr.write(f"healthcheck: {state_topic} is {state!r}\n")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vendor")
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    return 0 if check(args.vendor, args.config) else 1


if __name__ == "__main__":
    raise SystemExit(main())
