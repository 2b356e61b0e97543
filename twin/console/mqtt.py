"""The console's MQTT clients, made in one place, and the broker's answer to each publish.

Every client the console opens is made by :func:`console_client` from the configured
:class:`~twin.config.MqttSettings` (host, port, protocol, keepalive) and a person's own broker
login, so transport settings (TLS) are added in one line.

aiomqtt awaits a QoS 1 publish until its PUBACK but drops the PUBACK's reason code, and that code
is how an MQTT v5 broker says an ACL refused the message (mosquitto 2.0 answers 0x87 Not
authorized and drops it). :class:`Acknowledgements` reads the code from paho's callback, so a
refusal is shown as such instead of as a command that never got an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiomqtt
import anyio
from paho.mqtt import client as paho
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from twin.config import MqttSettings
from twin.mqtt import mqtt_client
from twin.publisher import paho_of

__all__ = ["Acknowledgements", "BrokerAnswer", "console_client", "reason_of"]

PUBACK_TIMEOUT = 10.0


def console_client(mqtt: MqttSettings, *, username: str, password: str | None, identifier: str) -> aiomqtt.Client:
    """A client of one person's session: their login, a clean session (retained topics are the
    state), and the bridges' transport settings (TLS, client certificate) from twin.mqtt."""
    secret = None if password is None else SecretStr(password)
    person = mqtt.model_copy(update={"username": username, "password": secret, "password_file": None})
    return mqtt_client(person, identifier=identifier)


@dataclass(frozen=True)
class BrokerAnswer:
    """The broker's reason code for one publish (0 = taken; >= 0x80 = refused, the message is dropped)."""

    code: int
    name: str

    @property
    def refused(self) -> bool:
        return self.code >= 0x80


def reason_of(reason: Any) -> BrokerAnswer:
    """A paho ReasonCode (or an int from MQTT 3.1.1) as a :class:`BrokerAnswer`."""
    value = getattr(reason, "value", reason)
    code = int(value) if isinstance(value, int) else 0
    name = getattr(reason, "getName", None)
    return BrokerAnswer(code=code, name=str(name()) if callable(name) else ("Success" if code == 0 else str(code)))


class Acknowledgements:
    """QoS 1 publishes that return the broker's reason code. Attach once per connected client."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[anyio.Event, list[BrokerAnswer]]] = {}
        self._early: dict[int, BrokerAnswer] = {}
        self._inner: paho.Client | None = None

    def attach(self, client: aiomqtt.Client) -> None:
        inner = paho_of(client)
        forward: Any = inner.on_publish  # aiomqtt's, for its own awaited publishes

        def on_publish(c: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            if forward is not None:
                forward(c, userdata, mid, reason, props)
            if c is self._inner:
                self._resolve(mid, reason_of(reason))

        inner.on_publish = on_publish
        self._inner = inner
        self._waiting.clear()
        self._early.clear()

    def _resolve(self, mid: int, answer: BrokerAnswer) -> None:
        waiting = self._waiting.pop(mid, None)
        if waiting is None:
            if len(self._early) > 1000:  # answers to publishes that timed out are never claimed
                self._early.clear()
            self._early[mid] = answer  # paho may call back before publish() returned the mid
            return
        waiting[1].append(answer)
        waiting[0].set()

    async def publish(
        self, topic: str, payload: bytes, *, properties: Properties | None = None, timeout: float = PUBACK_TIMEOUT
    ) -> BrokerAnswer:
        """Publish at QoS 1 (never retained) and return the broker's answer; raises MqttError without one."""
        inner = self._inner
        if inner is None:
            raise aiomqtt.MqttError("not connected to the broker")
        info = inner.publish(topic, payload, qos=1, retain=False, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish (the connection is gone)")
        early = self._early.pop(info.mid, None)
        if early is not None:
            return early
        event, result = anyio.Event(), list[BrokerAnswer]()
        self._waiting[info.mid] = (event, result)
        try:
            with anyio.fail_after(timeout):
                await event.wait()
        except TimeoutError:
            raise aiomqtt.MqttError(f"no acknowledgement from the broker within {timeout:g}s") from None
        finally:
            self._waiting.pop(info.mid, None)
        answer: BrokerAnswer = result[0]
        return answer
