"""Container health of one bridge: its retained ``<base>/bridge/<vendor>/state`` says ``online``.

    python /usr/local/lib/locktwin/healthcheck.py <vendor> [--config FILE]

Reads the broker address, credentials, TLS settings and base topic the way the bridge does (the
TOML file plus ``LOCKTWIN_*`` variables), connects with a client id of its own through the same
client factory (``twin.mqtt.mqtt_client``), and exits 0 when the bridge's
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
import uuid
from pathlib import Path

import aiomqtt
import anyio

from twin.config import TlsSettingsError, load_settings
from twin.mqtt import describe_error, mqtt_client

TIMEOUT = 10.0


async def state_of(vendor: str, config: Path | None) -> bytes | None:
    """The bridge's retained state, or None when there is none; raises aiomqtt.MqttError."""
    settings = load_settings(config)
    broker = settings.mqtt.for_vendor(vendor)  # the bridge's own user (bridge-{vendor})
    state_topic = f"{settings.base_topic}/bridge/{vendor}/state"
    user = broker.username or "anonymous"
    probe_topic = f"locktwin-replies/{user}/health-{uuid.uuid4().hex}"
    identifier = f"locktwin-health-{vendor}-{uuid.uuid4().hex[:8]}"
    state: bytes | None = None
    async with mqtt_client(broker, identifier=identifier) as client:
        await client.subscribe(state_topic, qos=1)
        await client.subscribe(probe_topic, qos=1)
        await client.publish(probe_topic, b"probe", qos=1)
        with anyio.move_on_after(TIMEOUT):
            async for message in client.messages:
                if message.topic.matches(state_topic):
                    state = message.payload if isinstance(message.payload, bytes) else None
                elif message.topic.matches(probe_topic):
                    break
    return state


def check(vendor: str, config: Path | None) -> bool:
    try:
        state = anyio.run(state_of, vendor, config)
    except (aiomqtt.MqttError, TlsSettingsError) as exc:
        sys.stderr.write(f"healthcheck: {describe_error(exc, load_settings(config).mqtt)}\n")
        return False
    if state != b"online":
        settings = load_settings(config)
        sys.stderr.write(f"healthcheck: {settings.base_topic}/bridge/{vendor}/state is {state!r}\n")
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
