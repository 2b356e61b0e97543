"""The windowed QoS 1 publisher (twin.publisher) against a real broker: order, acknowledgements,
MQTT v5 correlation data, the outbox while disconnected, and what goes back to it on a disconnect."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.lowlevel
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY

from twin.broker import MosquittoBroker
from twin.config import MqttSettings
from twin.publisher import Publisher, packet_size, paho_of

pytestmark = pytest.mark.anyio


def _client(url: str, role: str) -> aiomqtt.Client:
    mqtt = MqttSettings(url=url)
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=f"lt-pub-test-{role}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )


class Recorder:
    """Everything a subscriber received, in the order it arrived."""

    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []
        self._changed = anyio.Event()

    async def consume(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            self.messages.append(msg)
            self._changed.set()
            self._changed = anyio.Event()

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [
            m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            for m in self.messages
            if topic is None or m.topic.value == topic
        ]

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 10.0) -> Any:
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result


@asynccontextmanager
async def subscriber(url: str, topic: str) -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with _client(url, "sub") as client, anyio.create_task_group() as tg:
        await client.subscribe(topic, qos=1)
        tg.start_soon(rec.consume, client)
        try:
            yield rec
        finally:
            tg.cancel_scope.cancel()


async def _drained(publisher: Publisher) -> None:
    with anyio.fail_after(10):
        await publisher.drained()


def _base() -> str:
    return f"lt-pub-{uuid.uuid4().hex[:10]}"


async def test_window_keeps_order_and_on_sent_runs_once_per_puback(mqtt_broker: str) -> None:
    base, total, window = _base(), 500, 4
    topic = f"{base}/seq"
    publisher = Publisher(window=window)
    acked: list[int] = []
    pending_at_ack: list[int] = []

    def on_sent(i: int) -> Callable[[], None]:
        def done() -> None:
            acked.append(i)
            pending_at_ack.append(publisher.pending)  # the acknowledged message no longer counts

        return done

    async with subscriber(mqtt_broker, f"{base}/#") as rec, publisher.prepare(_client(mqtt_broker, "pub")) as client:
        assert paho_of(client).max_inflight_messages == window  # paho never queues behind the window
        publisher.attach(client)
        for i in range(total):
            publisher.send(topic, str(i).encode(), retain=False, on_sent=on_sent(i))
        # only the window was handed to the client; nothing is acknowledged before the broker answers
        assert len(publisher.outbox) == total - window
        assert publisher.pending == total
        assert acked == []
        await _drained(publisher)
        assert publisher.pending == 0 and not publisher.outbox
        # by the time drained() returns every on_sent ran, exactly once per message
        assert Counter(acked) == Counter(range(total))
        assert acked == list(range(total))  # the broker acknowledges in order
        assert pending_at_ack == [total - 1 - i for i in range(total)]
        await rec.wait_for(lambda: len(rec.payloads(topic)) >= total)
        assert rec.payloads(topic) == [str(i).encode() for i in range(total)]


async def test_correlation_data_arrives_as_the_v5_property(mqtt_broker: str) -> None:
    base = _base()
    publisher = Publisher(window=2)
    # one sent before connecting: its properties survive the outbox
    publisher.send(f"{base}/early", b"early", retain=False, correlation=b"\x00early\xff")
    async with subscriber(mqtt_broker, f"{base}/#") as rec, publisher.prepare(_client(mqtt_broker, "pub")) as client:
        publisher.attach(client)
        publisher.send(f"{base}/answer", b"with", retain=False, correlation=b"\x00corr\xff")
        publisher.send(f"{base}/answer", b"without", retain=False)
        await _drained(publisher)
        await rec.wait_for(lambda: len(rec.messages) >= 3)
        got = {m.payload: getattr(m.properties, "CorrelationData", None) for m in rec.messages}
        assert got == {b"early": b"\x00early\xff", b"with": b"\x00corr\xff", b"without": None}


async def test_messages_sent_while_disconnected_are_kept_newest_first_and_published_on_attach(
    mqtt_broker: str,
) -> None:
    base = _base()
    topic = f"{base}/queued"
    publisher = Publisher(window=3, limit=10)
    for i in range(25):
        publisher.send(topic, str(i).encode(), retain=False)
    assert not publisher.connected
    assert publisher.pending == 10
    assert [m.payload for m in publisher.outbox] == [str(i).encode() for i in range(15, 25)]
    async with subscriber(mqtt_broker, f"{base}/#") as rec, publisher.prepare(_client(mqtt_broker, "pub")) as client:
        publisher.attach(client)
        await _drained(publisher)
        await rec.wait_for(lambda: len(rec.payloads(topic)) >= 10)
        assert rec.payloads(topic) == [str(i).encode() for i in range(15, 25)]
        # connected, the limit does not apply: a burst larger than it is delivered whole
        for i in range(100, 130):
            publisher.send(topic, str(i).encode(), retain=False)
        assert publisher.pending == 30
        await _drained(publisher)
        await rec.wait_for(lambda: len(rec.payloads(topic)) >= 40)
        assert rec.payloads(topic)[10:] == [str(i).encode() for i in range(100, 130)]


async def test_detach_requeues_in_flight_messages_except_retained_and_on_sent(mqtt_broker: str) -> None:
    base = _base()
    publisher = Publisher(window=4)
    sent: list[str] = []
    async with subscriber(mqtt_broker, f"{base}/#") as rec:
        async with publisher.prepare(_client(mqtt_broker, "first")) as first:
            publisher.attach(first)
            publisher.send(f"{base}/a", b"a", retain=False)  # in flight, goes back
            publisher.send(f"{base}/r", b"r", retain=True)  # in flight, retained: republished from the store
            publisher.send(f"{base}/s", b"s", retain=False, on_sent=lambda: sent.append("s"))  # a final answer
            publisher.send(f"{base}/b", b"b", retain=False)  # in flight, goes back
            publisher.send(f"{base}/q", b"q", retain=False)  # beyond the window: still in the outbox
            publisher.send(f"{base}/q2", b"q2", retain=True)  # in the outbox: stays, retained or not
            assert [m.payload for m in publisher.outbox] == [b"q", b"q2"]
            publisher.detach()  # before any PUBACK was processed
            assert not publisher.connected
            assert [m.payload for m in publisher.outbox] == [b"a", b"b", b"q", b"q2"]
            assert publisher.pending == 4
            # The first connection still delivers what it was handed; its PUBACKs come back after
            # detach and must not run on_sent. An awaited publish on it is acknowledged after them.
            await first.publish(f"{base}/barrier", b"barrier", qos=1)
            assert sent == []
            assert [m.payload for m in publisher.outbox] == [b"a", b"b", b"q", b"q2"]
        async with publisher.prepare(_client(mqtt_broker, "second")) as second:
            publisher.attach(second)
            await _drained(publisher)
            await rec.wait_for(lambda: rec.payloads()[-1:] == [b"q2"])
            await second.publish(f"{base}/r", b"", qos=1, retain=True)  # clear the retained ones
            await second.publish(f"{base}/q2", b"", qos=1, retain=True)
        payloads = rec.payloads()
        cut = payloads.index(b"barrier")
        assert payloads[:cut] == [b"a", b"r", b"s", b"b"]  # the first connection
        assert payloads[cut + 1 : cut + 5] == [b"a", b"b", b"q", b"q2"]  # the second: requeued first, in order
        assert sent == []  # its acknowledgement belonged to a connection the publisher had left


async def test_detach_keeps_send_order_across_packet_id_wraparound(mqtt_broker: str) -> None:
    publisher = Publisher(window=4)
    async with publisher.prepare(_client(mqtt_broker, "wrap")) as client:
        paho_of(client)._last_mid = 65533  # the next ids are 65534, 65535, 1, 2
        publisher.attach(client)
        base = _base()
        for name in ("w", "x", "y", "z"):
            publisher.send(f"{base}/{name}", name.encode(), retain=False)
        publisher.detach()
        await client.publish(f"{base}/barrier", b"", qos=1)
    assert [m.payload for m in publisher.outbox] == [b"w", b"x", b"y", b"z"]


async def test_two_concurrent_drained_waiters_both_return(mqtt_broker: str) -> None:
    base = _base()
    publisher = Publisher(window=2)
    returned: list[str] = []

    async def wait(name: str) -> None:
        await publisher.drained()
        returned.append(name)

    async with publisher.prepare(_client(mqtt_broker, "drain")) as client:
        publisher.attach(client)
        for i in range(20):
            publisher.send(f"{base}/d", str(i).encode(), retain=False)
        with anyio.fail_after(2):  # 20 messages drain in milliseconds
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "first")
                await anyio.lowlevel.checkpoint()  # the first waiter is waiting
                tg.start_soon(wait, "second")
    assert sorted(returned) == ["first", "second"]


async def test_a_feed_runs_as_the_window_frees_and_lets_new_messages_pass(mqtt_broker: str) -> None:
    base, steps, window = _base(), 300, 4
    publisher = Publisher(window=window)
    held: list[int] = []  # messages the publisher held each time a step ran
    ran: list[int] = []

    def step(i: int) -> Callable[[], None]:
        def run() -> None:
            held.append(len(publisher.outbox) + len(publisher._in_flight))
            ran.append(i)
            publisher.send(f"{base}/fleet", f"{i}-twin".encode(), retain=False)
            publisher.send(f"{base}/fleet", f"{i}-state".encode(), retain=False)

        return run

    async with subscriber(mqtt_broker, f"{base}/#") as rec, publisher.prepare(_client(mqtt_broker, "pub")) as client:
        publisher.attach(client)
        publisher.feed(step(i) for i in range(steps))
        # only what fits the window ran: the rest of the batch is not rendered nor held yet
        assert len(ran) == window // 2 and publisher.pending == window + 1
        publisher.send(f"{base}/fleet", b"answer", retain=False)  # sent meanwhile: ahead of the rest
        await _drained(publisher)
        assert ran == list(range(steps))
        assert max(held) <= window  # never the whole batch at once
        await rec.wait_for(lambda: len(rec.payloads()) >= 2 * steps + 1)
        got = rec.payloads(f"{base}/fleet")
        assert got.index(b"answer") <= window + 1
        assert [p for p in got if p != b"answer"] == [
            f"{i}-{d}".encode() for i in range(steps) for d in ("twin", "state")
        ]


async def test_losing_the_connection_drops_an_unfinished_feed(mqtt_broker: str) -> None:
    base = _base()
    publisher = Publisher(window=2)
    ran: list[int] = []

    def step(i: int) -> Callable[[], None]:
        def run() -> None:
            ran.append(i)
            publisher.send(f"{base}/fleet", str(i).encode(), retain=True)

        return run

    async with publisher.prepare(_client(mqtt_broker, "pub")) as client:
        publisher.attach(client)
        publisher.feed(step(i) for i in range(1000))
        publisher.detach()  # the owner feeds the fleet again after reconnecting
    assert ran == [0, 1]
    assert publisher.pending == 0  # retained messages in flight are not requeued, the feed is gone


@pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")
async def test_the_brokers_receive_maximum_and_maximum_packet_size_are_obeyed(tmp_path: Path) -> None:
    """mosquitto closes the connection of a client that sends a packet over its max_packet_size; a
    message that would not fit is not sent, and the connection carries on."""
    broker = MosquittoBroker(workdir=tmp_path, extra_config="max_packet_size 2048\nmax_inflight_messages 5\n")
    broker.start()
    try:
        base = _base()
        publisher = Publisher(window=64)
        refused = REGISTRY.get_sample_value("locktwin_publish_too_large_total") or 0.0
        async with subscriber(broker.url, f"{base}/#") as rec, publisher.prepare(_client(broker.url, "pub")) as client:
            publisher.attach(client)
            assert (publisher.receive_maximum, publisher.maximum_packet_size) == (5, 2048)
            for i in range(100):
                publisher.send(f"{base}/n", str(i).encode(), retain=False)
                assert publisher.pending - len(publisher.outbox) <= 5  # never more in flight than the broker takes
            big = f"{base}/big"
            fits = max(n for n in range(2048) if packet_size(big, b"x" * n, None) <= 2048)
            assert packet_size(big, b"x" * fits, None) == 2048
            publisher.send(big, b"x" * fits, retain=False)  # exactly the limit
            publisher.send(big, b"y" * (fits + 1), retain=False)  # one byte over
            publisher.send(big, b"z" * 200, retain=False, correlation=b"c" * 1900)  # over by its property
            publisher.send(big, b"after", retain=False)
            await _drained(publisher)
            await rec.wait_for(lambda: len(rec.payloads(big)) >= 2 and len(rec.payloads(f"{base}/n")) >= 100)
            assert rec.payloads(big) == [b"x" * fits, b"after"]
            assert rec.payloads(f"{base}/n") == [str(i).encode() for i in range(100)]
            assert REGISTRY.get_sample_value("locktwin_publish_too_large_total") == refused + 2
            await client.publish(f"{base}/still", b"connected", qos=1)  # the same connection
    finally:
        broker.stop()


def test_packet_size_is_the_size_paho_puts_on_the_wire() -> None:
    for topic, payload, correlation in [
        ("a/b", b"", None),
        ("locktwin/okai/ü/state", b"p" * 300, None),
        ("t", b"q" * 20_000, b"\x00corr"),
        ("t" * 200, b"r" * 130, b"c" * 200),
    ]:
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client._sock = _Sink()  # type: ignore[assignment]  # paho queues the packet without a broker
        client.publish(topic, payload, qos=1, properties=props)
        wire = client._out_packet[0]["packet"]
        assert len(wire) == packet_size(topic, payload, correlation), (topic, len(payload))


class _Sink:
    def send(self, data: bytes) -> int:
        raise BlockingIOError

    def close(self) -> None:
        pass
