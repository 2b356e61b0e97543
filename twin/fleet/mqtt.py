"""Every MQTT client of the fleet service and its CLI, made in one place from ``MqttSettings``
(so that the TLS settings of the broker connection are wired in here once)."""

from __future__ import annotations

import aiomqtt

from twin.config import MqttSettings
from twin.mqtt import mqtt_client

__all__ = ["fleet_client", "reply_topic"]


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
    """A client of ``mqtt``'s broker (twin.mqtt: TLS and client certificates as every process);
    ``persistent``: the broker keeps its session (and queues its QoS 1 messages) for
    ``mqtt.session_expiry`` seconds while it is away; ``v5=False``: MQTT 3.1.1 even where the
    settings say 5 (for a client that needs none of its features)."""
    settings = mqtt if v5 or mqtt.protocol != "5" else mqtt.model_copy(update={"protocol": "3.1.1"})
    return mqtt_client(
        settings,
        identifier=identifier,
        will=will,
        persistent_session=persistent,
        max_queued_incoming=max_queued_incoming,
    )
