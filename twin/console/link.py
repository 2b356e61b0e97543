"""One session's MQTT connection, as the person who logged in.

The broker decides what each person may do: the connection uses their own username and password,
so its ACL filters what they read and refuses what they may not send. :meth:`SessionLink.run`
connects (a refused login ends it before it starts), subscribes to the fleet's retained topics,
feeds every message to the session's :class:`~twin.console.fleet.FleetView` and reconnects with
backoff when the connection is lost (with the password kept in the session, never elsewhere).

Commands carry a transaction naming the user (``console.<user>.<random>``, so the bridges' audit
journal says who), ``issued_at`` and ``expires_in`` (a command stuck somewhere is never acted on
late), and on MQTT v5 a Response Topic under the user's own reply tree
(``{base}-replies/<user>/...``, which the shipped ACL gives each user) with the transaction as
Correlation Data. The broker's PUBACK reason code is kept with the command: an ACL refusal is shown
as one. On MQTT 3.1.1 (the demo's embedded broker) answers are read from the public response topics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from typing import Any

import aiomqtt
import anyio
import orjson
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from twin.config import MqttSettings
from twin.console.fleet import FleetView, now_iso
from twin.console.mqtt import Acknowledgements, console_client

__all__ = ["BrokerUnavailable", "LoginRefused", "SessionLink"]

log = logging.getLogger(__name__)


class LoginRefused(Exception):
    """The broker refused this username and password (its CONNACK reason is the message)."""


class BrokerUnavailable(Exception):
    """The broker could not be reached."""


def _refusal(exc: aiomqtt.MqttCodeError) -> str:
    rc: Any = exc.rc
    value = getattr(rc, "value", rc)
    name = rc.getName() if hasattr(rc, "getName") else str(exc)
    return f"{name} (MQTT reason code 0x{value:02X})" if isinstance(value, int) else str(exc)


class SessionLink:
    def __init__(
        self,
        *,
        mqtt: MqttSettings,
        base: str,
        username: str,
        password: SecretStr | None,
        tag: str,
        view: FleetView,
        command_expiry: float,
    ) -> None:
        self.mqtt = mqtt
        self.base = base
        self.username = username
        self._password = password
        self.tag = tag
        self.view = view
        self.command_expiry = command_expiry
        self.v5 = mqtt.protocol == "5"
        self.reply_root = f"{base}-replies/{username}/console-{tag}"
        self.acks = Acknowledgements()
        self._client: aiomqtt.Client | None = None
        self._watched: dict[str, int] = {}

    @property
    def subscriptions(self) -> list[str]:
        b = self.base
        topics = [f"{b}/+/+/state", f"{b}/+/+/event", f"{b}/bridge/#", f"{b}/fleet/state"]
        topics += [f"{b}/fleet/jobs/+", f"{b}/fleet/zones/+"]
        if self.v5:
            topics.append(f"{self.reply_root}/#")
        else:  # no response topics on 3.1.1: answers are matched by transaction on the public topics
            topics += [f"{b}/+/+/response/+", f"{b}/fleet/response/+"]
        return topics

    def forget_password(self) -> None:
        self._password = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect and follow the fleet until cancelled; the first connection's failure is raised."""
        started, delay = False, 0.5
        while True:
            password = None if self._password is None else self._password.get_secret_value()
            try:
                async with console_client(
                    self.mqtt, username=self.username, password=password, identifier=f"locktwin-console-{self.tag}"
                ) as client:
                    await client.subscribe([(t, 1) for t in self.subscriptions])
                    for key in self._watched:
                        await client.subscribe(self._twin_topic(key), qos=1)
                    self.acks.attach(client)
                    self._client = client
                    self.view.set_link(connected=True)
                    if not started:
                        started = True
                        task_status.started()
                    delay = 0.5
                    async for message in client.messages:
                        self._on_message(message)
            except MqttConnectError as exc:
                if not started:
                    raise LoginRefused(_refusal(exc)) from None
                # the password was changed or the user removed: this login is over
                self.view.set_link(connected=False, error=f"the broker refused the login: {_refusal(exc)}")
                self.view.close()
                return
            except aiomqtt.MqttError as exc:
                if not started:
                    raise BrokerUnavailable(f"the broker at {self.mqtt.host}:{self.mqtt.port}: {exc}") from None
                log.info("console session of %s lost its MQTT connection (%s)", self.username, exc)
                self.view.set_link(connected=False, error="connection to the broker lost; reconnecting")
            finally:
                self._client = None
            await anyio.sleep(delay)
            delay = min(delay * 2, self.mqtt.reconnect_max)

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        topic = message.topic.value
        if topic.startswith(self.reply_root + "/"):
            correlation = getattr(message.properties, "CorrelationData", None)
            self.view.answer(payload, correlation if isinstance(correlation, bytes) else None)
        elif not self.v5 and "/response/" in topic:
            self.view.answer(payload)
        else:
            self.view.receive(topic, payload)

    # -- a device page's twin ------------------------------------------------------------------
    def _twin_topic(self, key: str) -> str:
        return f"{self.base}/{key}/twin"

    async def watch(self, key: str) -> None:
        self._watched[key] = self._watched.get(key, 0) + 1
        if self._watched[key] == 1 and self._client is not None:
            await self._client.subscribe(self._twin_topic(key), qos=1)

    async def unwatch(self, key: str) -> None:
        count = self._watched.get(key, 0) - 1
        if count > 0:
            self._watched[key] = count
            return
        self._watched.pop(key, None)
        self.view.twins.pop(key, None)
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # gone: the next connection does not subscribe to it
                await self._client.unsubscribe(self._twin_topic(key))

    # -- commands ------------------------------------------------------------------------------
    async def send(
        self, *, target: str, op: str, topic: str, body: dict[str, Any], summary: str, envelope: bool = True
    ) -> dict[str, Any]:
        """Publish one command; returns its log entry (status ``published``, ``refused`` or ``unsent``)."""
        transaction = f"console.{self.username}.{secrets.token_hex(6)}"
        body = {**body, "transaction": transaction}
        if envelope:
            body |= {"issued_at": now_iso(), "expires_in": self.command_expiry}
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = f"{self.reply_root}/{op}"
            properties.CorrelationData = transaction.encode()
            if envelope:  # the broker drops it unread once stale, as the envelope says
                properties.MessageExpiryInterval = max(1, math.ceil(self.command_expiry))
        entry: dict[str, Any] = {
            "transaction": transaction,
            "target": target,
            "op": op,
            "summary": summary,
            "sent_at": now_iso(),
            "status": "sending",
            "broker": None,
            "answers": [],
        }
        self.view.commands.add(entry)
        self.view.touch_command(transaction)
        try:
            answer = await self.acks.publish(topic, orjson.dumps(body), properties=properties)
        except aiomqtt.MqttError as exc:
            entry.update(status="unsent", broker={"code": None, "name": str(exc)})
        else:
            entry["broker"] = {"code": answer.code, "name": answer.name}
            if entry["status"] == "sending":  # an answer may have come in first
                entry["status"] = "refused" if answer.refused else "published"
            elif answer.refused:
                entry["status"] = "refused"
        self.view.touch_command(transaction)
        return entry
