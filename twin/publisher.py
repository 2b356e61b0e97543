"""QoS 1 publishing with a window of unacknowledged messages, without a task or a future per message.

aiomqtt's ``publish`` awaits each PUBACK through an ``asyncio.Event`` and ``asyncio.wait_for`` (a
task per call): a pool of 64 awaiting publishers spent ~125 us of CPU per QoS 1 message, this
publisher ~82 us (``python -m bench.publish_cost``). A bridge publishes several
messages per command, so this is the largest cost on its command path. The publisher therefore
hands messages to the paho client under aiomqtt (``Client._client``, the one private attribute
locktwin touches; :func:`paho_of` fails loudly if a release renames it) and counts PUBACKs itself:

- at most ``window`` messages are unacknowledged at once, the rest wait in order in the outbox
  (paho's own in-flight limit is the same; paho counts a PUBACK only after its callback, so a
  message sent from that callback waits in paho's queue until the callback returned);
- ``on_sent`` runs when the broker acknowledged the message (a final answer is then marked
  answered in the store);
- while disconnected the outbox keeps the newest ``limit`` messages; on disconnect, messages that
  were in flight go back to the front of the outbox, except retained ones and those with an
  ``on_sent`` (the runtime republishes retained topics and unanswered final answers from the store
  on reconnect, newer than anything in flight); on connect, queued messages with an ``on_sent`` are
  dropped for the same reason (a final answer made while the bridge was not connected, such as a
  command that expired while it was down, would otherwise be sent twice).

Messages reach the wire in the order they were sent, so a later retained state wins.

The broker's limits from its CONNACK (MQTT 5) are obeyed, because brokers enforce them by closing
the connection, and a bridge that reconnects and republishes the same message loops forever:

- its Receive Maximum caps the window (mosquitto advertises its ``max_inflight_messages``, 20
  unless set, EMQX its ``max_inflight``; paho itself does not look at it);
- a message larger than its Maximum Packet Size (``max_packet_size`` in mosquitto, 1 MB by default
  in EMQX) is not sent: it is logged and counted in ``locktwin_publish_too_large_total``.

A large batch (republishing a fleet's retained topics after connecting) is :meth:`feed` as steps
that each send a few messages; a step runs only when the outbox is empty and the window has room.
So the process holds a window's worth of those messages instead of all 200,000 of a 100,000-device
fleet at once, and a message sent meanwhile (an answer) goes out before the rest of the batch.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import anyio
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twin import puback
from twin.metrics import PUBLISH_TOO_LARGE

__all__ = ["Publisher", "packet_size", "paho_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool
    props: Properties | None
    on_sent: Callable[[], None] | None
    #: False once the message must not go out any more (its partition's lease is gone)
    guard: Callable[[], bool] | None = None


def _varint_size(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def packet_size(topic: str, payload: bytes, correlation: bytes | None, *, v5: bool = True) -> int:
    """Bytes of the QoS 1 PUBLISH packet that carries this message (MQTT 5 counts the whole packet)."""
    props = 0 if correlation is None else 3 + len(correlation)
    rest = 2 + len(topic.encode()) + 2 + len(payload)
    if v5:
        rest += _varint_size(props) + props
    return 1 + _varint_size(rest) + rest


def paho_of(client: aiomqtt.Client) -> paho.Client:
    inner = getattr(client, "_client", None)
    if not isinstance(inner, paho.Client):
        raise RuntimeError("this aiomqtt release does not expose its paho client as Client._client")
    return inner


class Publisher:
    def __init__(self, *, window: int = 64, limit: int = 100_000) -> None:
        self.window = window
        self.limit = limit
        self.outbox: deque[Outgoing] = deque()
        self._paho: paho.Client | None = None
        self._in_flight: dict[int, Outgoing] = {}
        self._idle: anyio.Event | None = None
        self._feed: Iterator[Callable[[], None]] | None = None
        self._pumping = False
        #: the broker's limits on this connection (CONNACK properties); None: it set none
        self.receive_maximum: int | None = None
        self.maximum_packet_size: int | None = None
        #: whether the broker resumed a session it kept for us (CONNACK), so messages may have waited
        self.session_present = False
        self._room = window

    @property
    def connected(self) -> bool:
        return self._paho is not None

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged by the broker (queued or in flight; a feed counts as one)."""
        return len(self.outbox) + len(self._in_flight) + (self._feed is not None)

    async def drained(self) -> None:
        """Wait until the broker acknowledged everything sent so far."""
        while self.pending:
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        correlation: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
        properties: Properties | None = None,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        """Queue one QoS 1 message; ``properties`` are MQTT v5 PUBLISH properties of the caller's own
        (a Message Expiry Interval, a Response Topic), ``correlation`` is added to them."""
        props = properties
        if correlation is not None:
            if props is None:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        if self._paho is None:
            while len(self.outbox) >= self.limit:
                self.outbox.popleft()
        self.outbox.append(Outgoing(topic, payload, retain, props, on_sent, guard))
        self._pump()

    def feed(self, steps: Iterator[Callable[[], None]]) -> None:
        """Run ``steps`` (each sends a few messages) as the window frees up, after what is queued; a
        feed given while one runs follows it, and losing the connection drops both."""
        self._feed = steps if self._feed is None else itertools.chain(self._feed, steps)
        self._pump()

    def prepare(self, client: aiomqtt.Client) -> aiomqtt.Client:
        """Before connecting: paho's own in-flight limit becomes the window (set only before connecting),
        PUBACKs are decoded the cheap way (:mod:`twin.puback`), and the broker's limits and whether it
        kept our session are read from its CONNACK."""
        inner = paho_of(client)
        inner.max_inflight_messages = max(self.window, 1)
        puback.install()
        forward: Any = inner.on_connect  # aiomqtt's

        def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            if c is inner:
                self.session_present = bool(getattr(flags, "session_present", False))
                self.receive_maximum = getattr(props, "ReceiveMaximum", None)
                self.maximum_packet_size = getattr(props, "MaximumPacketSize", None)
            if forward is not None:
                forward(c, userdata, flags, reason, props)

        inner.on_connect = on_connect
        return client

    def attach(self, client: aiomqtt.Client) -> None:
        """Start publishing on a connected client (call before anything else is sent on it)."""
        inner = paho_of(client)
        forward: Any = inner.on_publish  # aiomqtt's, for its own awaited publishes

        def on_publish(c: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            if forward is not None:
                forward(c, userdata, mid, reason, props)
            self._acknowledged(inner, mid, reason)

        inner.on_publish = on_publish
        # Messages with an on_sent (final answers) are the owner's to send again from its store once
        # connected (they are still unanswered there); a queued copy would arrive twice.
        if any(m.on_sent is not None for m in self.outbox):
            self.outbox = deque(m for m in self.outbox if m.on_sent is None)
        self._paho = inner
        self._room = max(1, min(self.window, self.receive_maximum or self.window))
        self._pump()

    def detach(self) -> None:
        """The connection is gone: messages in flight go back to the outbox (see the module doc)."""
        self._paho = None
        self._feed = None  # the owner feeds it again after reconnecting
        # in send order (dict order; packet ids wrap at 65535, so they cannot order them)
        again = [m for m in self._in_flight.values() if not m.retain and m.on_sent is None]
        self._in_flight.clear()
        self.outbox.extendleft(reversed(again))
        while len(self.outbox) > self.limit:
            self.outbox.popleft()

    def _acknowledged(self, inner: paho.Client, mid: int, reason: Any) -> None:
        if inner is not self._paho:
            return
        item = self._in_flight.pop(mid, None)
        if item is None:
            return
        if getattr(reason, "is_failure", False):
            log.warning("the broker refused a publish to %s: %s", item.topic, reason)
        elif item.on_sent is not None:
            try:
                item.on_sent()
            except Exception:
                log.exception("after publishing to %s", item.topic)
        self._pump()

    def _pump(self) -> None:
        if self._pumping:  # a step of the feed is sending: the loop below picks its messages up
            return
        self._pumping = True
        try:
            inner = self._paho
            while inner is not None and len(self._in_flight) < self._room:
                if not self.outbox:
                    if not self._next_step():
                        break
                    continue
                item = self.outbox.popleft()
                if item.guard is not None and not item.guard():
                    continue  # its lease ended while it waited: whoever holds it now publishes
                if self.maximum_packet_size is not None and self._too_large(item, self.maximum_packet_size):
                    continue
                info = inner.publish(item.topic, item.payload, qos=1, retain=item.retain, properties=item.props)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    # The socket is gone and aiomqtt is about to raise: keep it for the next connection.
                    self.outbox.appendleft(item)
                    return
                self._in_flight[info.mid] = item
        finally:
            self._pumping = False
        if self._idle is not None and not self.pending:
            self._idle.set()

    @staticmethod
    def _too_large(item: Outgoing, limit: int) -> bool:
        correlation = None if item.props is None else getattr(item.props, "CorrelationData", None)
        size = packet_size(item.topic, item.payload, correlation)
        if size <= limit:
            return False
        PUBLISH_TOO_LARGE.inc()
        log.error(
            "not sent to %s: %d bytes, and the broker takes packets of at most %d (its Maximum Packet Size)",
            item.topic,
            size,
            limit,
        )
        return True

    def _next_step(self) -> bool:
        if self._feed is None:
            return False
        step = next(self._feed, None)
        if step is None:
            self._feed = None
            return False
        try:
            step()
        except Exception:
            log.exception("a step of a publishing feed failed")
        return True
