"""The broker matrix's RabbitMQ row: a private node with the MQTT plugin, beside the running one.

RabbitMQ's MQTT listener can be had without touching the machine's RabbitMQ: a node of its own
(:class:`twin.broker.RabbitMqBroker`: its name, cookie, data and ports; ~10 s to start). 3.10.8
(Debian's) speaks MQTT 3.1.1 only. What holds: a lock confirmed, a restart of the bridge with the
commands sent meanwhile, retained state for a subscriber of the exact topic (``locktwin twin``).
What does not, and is asserted so that the README's matrix cannot go stale: retained messages
reach no subscription with a wildcard (a dashboard on ``locktwin/#`` gets no snapshot), and a
``.`` in a topic reaches subscribers as ``/``, so a device id with one must be refused
(``mqtt.dots_in_topics = false``).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import anyio
import pytest

from tests.fake_adapter import FakeAdapter
from twin.broker import RabbitMqBroker
from twin.config import MqttSettings
from twin.mqtt import describe_error, mqtt_client
from twin.testing import BridgeHarness

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not RabbitMqBroker.available(), reason="rabbitmq-server not installed"),
]


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitMqBroker]:
    broker = RabbitMqBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


def on_rabbit(broker: RabbitMqBroker) -> MqttSettings:
    return MqttSettings(url=broker.url, protocol="3.1.1", dots_in_topics=False)


async def first(client: aiomqtt.Client, *, timeout: float = 15) -> aiomqtt.Message:
    with anyio.fail_after(timeout):
        async for message in client.messages:
            return message
    raise AssertionError("no message")  # pragma: no cover


async def test_v5_is_refused_with_a_line_that_says_what_to_set(rabbit: RabbitMqBroker) -> None:
    settings = MqttSettings(url=rabbit.url)
    with pytest.raises(aiomqtt.MqttError) as refused:
        async with mqtt_client(settings, identifier="v5-probe"):
            pass
    assert "set mqtt.protocol" in describe_error(refused.value, settings)


async def test_lock_confirmed_and_a_restart_of_the_bridge(rabbit: RabbitMqBroker, tmp_path: Path) -> None:
    adapter = FakeAdapter()
    adapter.locks["d1"].locked = False
    async with BridgeHarness(adapter=adapter, mqtt=on_rabbit(rabbit), data_dir=tmp_path) as h:
        final = await h.set("d1", {"lock": "LOCKED"})
        assert final["status"] == "succeeded"
        assert [e["data"]["to"] for e in h.events("d1", "command")] == ["accepted", "sent", "acknowledged", "succeeded"]
        await h.stop_bridge()
        await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/fake/state") == b"offline")
        await h.publish(h.topic("d1", "set"), {"lock": "UNLOCKED", "transaction": "while-down", "expires_in": 60})
        async with anyio.create_task_group() as tg:
            await h.start_bridge(tg)
            assert (await h.final("d1", "while-down"))["status"] == "succeeded"
            await h.stop_bridge()
        assert adapter.calls == [("d1", "lock"), ("d1", "unlock")]

        # retained state: to a subscriber of the exact topic, with the retain flag
        async with mqtt_client(on_rabbit(rabbit), identifier=f"twin-{uuid.uuid4().hex[:6]}") as reader:
            await reader.subscribe(h.topic("d1", "state"), qos=1)
            message = await first(reader)
            assert message.retain and json.loads(bytes(message.payload))["lock"] == "UNLOCKED"  # type: ignore[arg-type]

        # ... and not to a subscription with a wildcard: a marker published after the SUBACK comes
        # first, where a retained message would have come before it
        async with mqtt_client(on_rabbit(rabbit), identifier=f"dash-{uuid.uuid4().hex[:6]}") as dashboard:
            await dashboard.subscribe(f"{h.base}/#", qos=1)
            await dashboard.publish(f"{h.base}/marker", b"after-subscribe", qos=1)
            message = await first(dashboard)
            assert message.topic.value == f"{h.base}/marker" and not message.retain


async def test_a_dot_in_a_topic_reaches_subscribers_as_a_slash(rabbit: RabbitMqBroker) -> None:
    base = f"lt-test-{uuid.uuid4().hex[:10]}"
    settings = on_rabbit(rabbit)
    async with (
        mqtt_client(settings, identifier=f"{base}-sub") as sub,
        mqtt_client(settings, identifier=f"{base}-pub") as pub,
    ):
        await sub.subscribe(f"{base}/fake/#", qos=1)
        await pub.publish(f"{base}/fake/bike.7/state", b"{}", qos=1)
        message = await first(sub)
    # not reversible (bike/7 is as valid a topic), so such ids are refused, not mapped
    assert message.topic.value == f"{base}/fake/bike/7/state"
