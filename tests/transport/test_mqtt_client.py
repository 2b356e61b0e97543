"""``twin.mqtt.mqtt_client``, the one place every locktwin process gets its MQTT client from.

Its surface is pinned (the fleet service and the console build on it); what it promises is checked
against a real mosquitto: TCP_NODELAY, persistent sessions on MQTT 5 and 3.1.1, a will, and the
one-line description of connections that fail for other reasons than certificates.
"""

from __future__ import annotations

import inspect
import socket
import uuid

import aiomqtt
import anyio
import pytest

import twin.mqtt
from tests.transport.conftest import Pki, TlsBroker
from twin.broker import free_port
from twin.config import MqttSettings
from twin.mqtt import describe_error, mqtt_client

pytestmark = pytest.mark.anyio


def test_public_surface() -> None:
    assert twin.mqtt.__all__ == [
        "BrokerClosedConnection",
        "SocketOption",
        "UnsupportedTopicError",
        "check_topic_levels",
        "describe_error",
        "disconnect_shielded",
        "mqtt_client",
    ]
    parameters = inspect.signature(mqtt_client).parameters
    assert list(parameters) == [
        "settings",
        "identifier",
        "will",
        "persistent_session",
        "socket_options",
        "max_queued_incoming",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in parameters.items() if name != "settings")


async def next_message(client: aiomqtt.Client, *, timeout: float = 10) -> aiomqtt.Message:
    with anyio.fail_after(timeout):
        async for message in client.messages:
            return message
    raise AssertionError("no message")  # pragma: no cover


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_persistent_session_keeps_what_came_while_away(mqtt_broker: str, protocol: str) -> None:
    settings = MqttSettings(url=mqtt_broker, protocol=protocol)  # type: ignore[arg-type]
    topic = f"lt-test-{uuid.uuid4().hex[:8]}/cmd"
    identifier = f"lt-persistent-{uuid.uuid4().hex[:8]}"
    async with mqtt_client(settings, identifier=identifier, persistent_session=True) as client:
        await client.subscribe(topic, qos=1)
    async with mqtt_client(settings, identifier=f"{identifier}-sender") as sender:
        await sender.publish(topic, b"while away", qos=1)
    async with mqtt_client(settings, identifier=identifier, persistent_session=True) as client:
        assert (await next_message(client)).payload == b"while away"
        sock = client._client.socket()  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    # a clean session starts over: the old one is gone, what is sent now goes nowhere queued
    async with mqtt_client(settings, identifier=identifier) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"now", qos=1)
        assert (await next_message(client)).payload == b"now"


async def test_the_will_is_published_when_the_connection_dies(mqtt_broker: str) -> None:
    settings = MqttSettings(url=mqtt_broker)
    topic = f"lt-test-{uuid.uuid4().hex[:8]}/state"
    will = aiomqtt.Will(topic, b"offline", qos=1, retain=False)
    async with mqtt_client(settings, identifier=f"lt-watch-{uuid.uuid4().hex[:6]}") as watcher:
        await watcher.subscribe(topic, qos=1)
        dying = mqtt_client(settings, identifier=f"lt-dying-{uuid.uuid4().hex[:6]}", will=will)
        await dying.__aenter__()
        dying._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        assert (await next_message(watcher)).payload == b"offline"


async def test_other_failures_are_one_line_too(tls_broker: TlsBroker, pki: Pki) -> None:
    plain = tls_broker.broker.port
    cases = {
        f"mqtt://localhost:{tls_broker.tls}": "the broker reset the connection (a TLS listener? then use mqtts://)",
        f"mqtts://localhost:{plain}": "(a plain mqtt:// listener?)",
        f"mqtt://127.0.0.1:{free_port()}": "nothing listens on 127.0.0.1",
        "mqtt://no-such-host.invalid": "cannot resolve no-such-host.invalid",
    }
    for url, expected in cases.items():
        settings = MqttSettings(url=url, ca_file=pki.ca.cert_file) if url.startswith("mqtts") else MqttSettings(url=url)
        with pytest.raises(aiomqtt.MqttError) as failed:
            async with mqtt_client(settings, identifier="lt-fails"):
                pass
        line = describe_error(failed.value, settings)
        assert line.startswith(f"MQTT {url}: ") and expected in line and "\n" not in line, line
