"""Every MQTT client of the fleet service and its CLI, made in one place from ``MqttSettings``
(so that the TLS settings of the broker connection are wired in here once)."""

from __future__ import annotations

import socket
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twin.config import MqttSettings

__all__ = ["fleet_client", "reply_topic"]

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def reply_topic(mqtt: MqttSettings, client_id: str) -> str:
    """This client's MQTT v5 response topic, in the user's own reply tree (see mosquitto/acl)."""
    return f"locktwin-replies/{mqtt.username or 'fleet'}/{client_id}"


def fleet_client(
    mqtt: MqttSettings,
    *,
    identifier: str,
    persistent: bool = False,
    will: aiomqtt.Will | None = None,
    max_queued_incoming: int = 0,
    v5: bool = True,
) -> aiomqtt.Client:
    """A client of ``mqtt``'s broker; ``persistent``: the broker keeps its session (and queues its
    QoS 1 messages) for ``mqtt.session_expiry`` seconds while it is away; ``v5=False``: MQTT 3.1.1
    even where the settings say 5 (for a client that needs none of its features)."""
    session: dict[str, Any]
    if mqtt.protocol == "5" and v5:
        session = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": not persistent}
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = mqtt.session_expiry
            session["properties"] = props
    else:
        session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": not persistent}
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.secret(),
        identifier=identifier,
        will=will,
        keepalive=mqtt.keepalive,
        socket_options=NODELAY,
        max_queued_incoming_messages=max_queued_incoming,
        **session,
    )
