"""A client of the fleet service over MQTT: requests with their answers, and a job's progress.

Requests go to ``{base}/fleet/request/{op}`` with a fresh transaction and, on MQTT v5, a Response
Topic in the user's own reply tree with the transaction as Correlation Data; on MQTT 3.1.1 the
answer is read from ``{base}/fleet/response/{op}``, matched by transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contracts.fleet import FleetTopics
from twin.config import LocktwinSettings
from twin.fleet.mqtt import fleet_client, reply_topic

__all__ = ["FleetClient", "NoAnswer"]


class NoAnswer(TimeoutError):
    pass


class FleetClient:
    def __init__(self, *, settings: LocktwinSettings, client_id: str | None = None) -> None:
        self.settings = settings
        self.topics = FleetTopics(settings.base_topic)
        self.client_id = client_id or f"locktwin-cli-{uuid.uuid4().hex[:8]}"

    async def request(self, op: str, body: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        """The fleet service's answer (a Response document); NoAnswer after ``timeout``."""
        mqtt = self.settings.mqtt
        transaction = f"cli-{uuid.uuid4().hex[:12]}"
        payload = orjson.dumps({**body, "transaction": transaction})
        v5 = mqtt.protocol == "5"
        listen = reply_topic(mqtt, self.client_id) if v5 else self.topics.response(op)
        async with fleet_client(mqtt, identifier=self.client_id) as client:
            await client.subscribe(listen, qos=1)
            props = None
            if v5:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = listen
                props.CorrelationData = transaction.encode()
            await client.publish(self.topics.request(op), payload, qos=1, properties=props)
            with anyio.move_on_after(timeout):
                async for message in client.messages:
                    if not isinstance(message.payload, bytes):
                        continue
                    try:
                        answer = orjson.loads(message.payload)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(answer, dict) and answer.get("transaction") == transaction:
                        return answer
        raise NoAnswer(f"no answer from the fleet service within {timeout:g}s (is `locktwin fleet` running?)")

    async def follow_job(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job's retained document, then every new one, until the caller stops."""
        async with fleet_client(self.settings.mqtt, identifier=f"{self.client_id}-watch") as client:
            await client.subscribe(self.topics.job(job_id), qos=1)
            async for message in client.messages:
                if isinstance(message.payload, bytes) and message.payload:
                    doc = orjson.loads(message.payload)
                    if isinstance(doc, dict):
                        yield doc
