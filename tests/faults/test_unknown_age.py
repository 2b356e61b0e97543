"""Never run a command of unknown age: commands queued in the bridge's persistent session while it
was away (a real ``locktwin run okai`` process, the OKAI simulator over real HTTP, mosquitto).

- Away 20 s: the CLI's ``unlock --expires-in 5`` (issued_at and a Message Expiry Interval), a plain
  ``UNLOCK`` from a raw MQTT 3.1.1 paho client and a v5 JSON command without ``issued_at`` or
  message expiry are all refused or dropped, and the scooters never get a switchLock.
- Away 2 s (a crash and a restart): a plain ``LOCK`` queued meanwhile runs, as the persistent
  session promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import paho.mqtt.client as paho
import pytest

from bridges.okai.client import PATHS
from bridges.okai.simulator import DEMO_USER_KEY, OkaiSimulator, serve_simulator
from tests.faults.common import Client, okai_bridge, start_bridge
from twin.testing_process import ROOT

pytestmark = pytest.mark.anyio

AWAY = 20.0
#: the bridge's expiry of commands that name none (plain LOCK/UNLOCK)
DEFAULT_EXPIRY = 10.0


def paho_publish(broker_url: str, topic: str, payload: bytes, *, protocol: int) -> None:
    """One QoS 1 publish from a plain paho client, as a script would."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


def answers_for(client: Client, device: str) -> list[dict[str, object]]:
    topic = client.topic(device, "response/set")
    return [body for t, body in client.responses if t == topic]


async def probe(client: Client, device: str) -> None:
    """A live command after everything else: its answer comes after every earlier one."""
    txn = await client.send_set(device, "LOCKED", expires_in=20, issued_at=True)
    await client.wait_for(lambda: "succeeded" in client.answers[txn].statuses, timeout=30)


async def test_commands_older_than_their_expiry_never_run(mqtt_broker: str, tmp_path: Path) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=5, bolt_seconds=0.1, delivery_seconds=0.0)
    imeis = sim.fleet.imeis
    base = f"lt-age-{uuid.uuid4().hex[:8]}"
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker,
            base=base,
            base_url=base_url,
            imeis=imeis,
            workdir=tmp_path,
            LOCKTWIN_BRIDGES__OKAI__DEFAULT_EXPIRY=str(DEFAULT_EXPIRY),
        )
        try:
            await start_bridge(bridge, client)
            bridge.stop()  # a clean stop: SIGTERM
            left = time.monotonic()
            cli = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "twin.cli",
                        "unlock",
                        f"okai/{imeis[0]}",
                        "--wait",
                        "--timeout",
                        "5",
                        "--expires-in",
                        "5",
                    ],
                    env={**bridge.env},
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            )
            assert cli.returncode == 6, (cli.returncode, cli.stderr)
            plain = client.topic(imeis[1], "set")
            await anyio.to_thread.run_sync(lambda: paho_publish(mqtt_broker, plain, b"UNLOCK", protocol=paho.MQTTv311))
            no_expiry = json.dumps({"lock": "UNLOCKED", "transaction": "v5-no-expiry", "expires_in": DEFAULT_EXPIRY})
            await anyio.to_thread.run_sync(
                lambda: paho_publish(
                    mqtt_broker, client.topic(imeis[2], "set"), no_expiry.encode(), protocol=paho.MQTTv5
                )
            )
            await anyio.sleep(max(0.0, AWAY - (time.monotonic() - left)))
            await start_bridge(bridge, client)
            await probe(client, imeis[4])
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()

    log = bridge.log_path.read_text()
    assert [c.params["imei"] for c in sim.calls_to(PATHS["switch_lock"])] == [imeis[4]]
    # the CLI's command carried a Message Expiry Interval of 5 s: the broker dropped it, or the
    # bridge refused it by its issued_at; it was never accepted
    assert all(a["status"] != "accepted" for a in answers_for(client, imeis[0])), answers_for(client, imeis[0])
    [refused_plain] = answers_for(client, imeis[1])
    assert refused_plain["status"] == "rejected" and refused_plain["transaction"] is None
    error = refused_plain["error"]
    assert isinstance(error, dict) and error["code"] == "EXPIRED"
    assert "age is unknown" in str(error["message"]) and "bridge was away" in str(error["message"])
    [refused_json] = answers_for(client, imeis[2])
    assert refused_json["status"] == "rejected" and refused_json["transaction"] == "v5-no-expiry"
    assert isinstance(refused_json["error"], dict) and refused_json["error"]["code"] == "EXPIRED"
    for imei in imeis[:3]:
        assert sim.fleet[imei].locked, f"{imei} was unlocked\n{log[-3000:]}"


async def test_plain_command_queued_during_a_short_restart_runs(mqtt_broker: str, tmp_path: Path) -> None:
    sim = OkaiSimulator(user_key=DEMO_USER_KEY, devices=2, bolt_seconds=0.1, delivery_seconds=0.0)
    imei = sim.fleet.imeis[0]
    sim.fleet[imei].locked = False
    base = f"lt-age-{uuid.uuid4().hex[:8]}"
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        client = Client(broker_url=mqtt_broker, base=base, vendor="okai")
        await tg.start(client.run)
        bridge = okai_bridge(
            broker_url=mqtt_broker, base=base, base_url=base_url, imeis=sim.fleet.imeis, workdir=tmp_path
        )
        try:
            await start_bridge(bridge, client)
            await client.wait_for(
                lambda: (client.retained_json(imei, "state") or {}).get("lock") == "UNLOCKED", timeout=20
            )
            await anyio.sleep(1.5)  # past one heartbeat of the store: the bridge was live until now
            bridge.kill()
            topic = client.topic(imei, "set")
            await anyio.to_thread.run_sync(lambda: paho_publish(mqtt_broker, topic, b"LOCK", protocol=paho.MQTTv311))
            await anyio.sleep(2.0)
            await start_bridge(bridge, client)
            await client.wait_for(
                lambda: [a["status"] for a in answers_for(client, imei)][-1:] == ["succeeded"], timeout=30
            )
        finally:
            bridge.stop()
            tg.cancel_scope.cancel()
    assert [a["status"] for a in answers_for(client, imei)] == ["accepted", "succeeded"]
    assert sim.fleet[imei].locked
    assert [c.params["operate"] for c in sim.calls_to(PATHS["switch_lock"])] == ["lock"]
