"""How commands reach a partition's owner when instances share a PostgreSQL store (twin.cluster).

:class:`Intake` runs on the instance that holds the intake lease: the one MQTT session (a fixed
client id, persistent) subscribed to the vendor's command topics, with manual acknowledgements.
Each message goes into the ``inbox`` table with what its delivery tells of its age (twin.session's
backlog marker works on this session as on a lone bridge's: ``live_at`` is the intake's, in the
vendor's meta); a batch is one commit fenced by the intake lease, and only then are its messages
acknowledged. A holder that dies leaves the unacknowledged ones in the session; the next holder
resumes the session and gets them again (and the fence refuses the dead holder's late batch, so
none is stored twice by two holders).

:class:`Inbox` runs on every instance: it takes the rows of the partitions it holds, oldest first,
and hands each to the partition's engine as if it had just arrived, with its age counted from when
the intake received it. The row is deleted in the commit of what the engine stored for it. It also
applies the vendor pushes other instances received for these partitions' devices (the
``forwarded`` table, twin.partitions.ClusterSink), each in the commit that deletes its row.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import aiomqtt
import anyio
import psycopg
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import EventType
from twin.adapter import ReportedPatch
from twin.homeassistant import DEFAULT_PREFIX
from twin.intake import Arrival, best_effort_transaction
from twin.leases import Lease
from twin.metrics import PUSHES_FORWARDED
from twin.mqtt import describe_error, mqtt_client
from twin.outbound import Outbound, ReplyTo
from twin.pgdb import PgDatabase
from twin.pgstore import VendorStore
from twin.publisher import Publisher, paho_of
from twin.retention import PRUNE_BATCH
from twin.session import SessionClock
from twin.storeapi import LeaseLost, StoreUnavailable

if TYPE_CHECKING:
    from twin.cluster import ClusterRuntime

__all__ = ["Inbox", "Intake"]

log = logging.getLogger(__name__)

#: messages stored in one commit at most
BATCH = 200
#: seconds between two looks at the inbox when no notification came
POLL = 0.5


class Intake:
    def __init__(self, *, runtime: ClusterRuntime, db: PgDatabase, lease: Lease) -> None:
        self.rt = runtime
        self.db = db
        self.lease = lease
        self.store = VendorStore(db, epoch=lease.epoch)
        self.session = SessionClock(store=self.store, marker_topic=runtime.topics.bridge_session_marker)
        self.publisher = Publisher(window=64, limit=1000)
        self._scope = anyio.CancelScope()
        self._last_prune = 0.0

    def stop(self) -> None:
        self._scope.cancel()

    def heartbeat(self) -> None:
        if self.lease.valid():
            try:
                self.session.heartbeat()
            except LeaseLost:
                self.stop()
                return
            self._prune()

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 1.0:
            return
        self._last_prune = now
        options = self.rt.options
        try:
            if options.journal_days:
                self.store.prune_journal(before=now - options.journal_days * 86_400, limit=PRUNE_BATCH)
            if options.commands_days:
                self.store.prune_commands(before=now - options.commands_days * 86_400, limit=PRUNE_BATCH)
        except (LeaseLost, StoreUnavailable) as exc:
            log.warning("store retention failed: %s", exc)

    async def run(self) -> None:
        topics = self.rt.topics
        with self._scope:
            delay = 0.5
            while self.lease.valid():
                will = aiomqtt.Will(topics.bridge_state, b"offline", qos=1, retain=True)
                client = mqtt_client(
                    self.rt.mqtt, identifier=self.rt.intake_client_id, will=will, persistent_session=True
                )
                self.publisher.prepare(client)
                paho_of(client).manual_ack_set(True)
                try:
                    async with client:
                        delay = 0.5
                        await self._serve(client)
                except aiomqtt.MqttError as exc:
                    log.warning("intake: %s; retrying in %.1fs", describe_error(exc, self.rt.mqtt), delay)
                finally:
                    self.session.disconnected()
                    self.publisher.detach()
                await anyio.sleep(delay)
                delay = min(delay * 2, self.rt.mqtt.reconnect_max)
        log.info("intake ends (lease %s)", self.lease.epoch)

    async def _serve(self, client: aiomqtt.Client) -> None:
        topics = self.rt.topics
        if self.rt.mqtt.protocol == "5":
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            await client.subscribe([(t, options) for t in topics.subscriptions])
        else:
            await client.subscribe([(t, 1) for t in topics.subscriptions])
        await client.subscribe(self.session.marker_topic, qos=1)
        marker = self.session.connected(session_present=self.publisher.session_present)
        if marker is not None:
            await client.publish(self.session.marker_topic, marker, qos=1)
        await client.publish(topics.bridge_state, b"online", qos=1, retain=True)
        self.publisher.attach(client)
        vendor = Outbound(topics=topics, store=self.store, held=lambda d: False, current_of=lambda d: None)
        vendor.use(self.publisher)
        vendor.attach({}, self.rt.devices, self.rt.adapter.desired_fields(), self.rt.adapter.actions())
        vendor.actions_table()
        vendor.devices_list()
        log.info("%s intake connected as %s (lease %s)", self.rt.adapter.vendor, client.identifier, self.lease.epoch)
        inner = paho_of(client)
        messages = client.messages
        async for first in messages:
            batch = [first]
            while len(messages) and len(batch) < BATCH:  # what already arrived joins this commit
                batch.append(await anext(messages))
            rows = [row for m in batch if (row := self._row(m)) is not None]
            if not self.lease.valid():
                return  # not acknowledged: the next holder of the session gets them
            if rows:
                try:
                    self.store.put_inbox(rows)
                    await self.store.settled()  # acknowledged only once they are durable
                except StoreUnavailable as exc:
                    # not acknowledged: the broker gives them again on the next connection
                    log.warning("intake: %s; reconnecting", exc)
                    return
                except LeaseLost:
                    return  # not acknowledged: the next holder of the session gets them
            for m in batch:
                inner.ack(m.mid, m.qos)

    def _row(self, message: aiomqtt.Message) -> tuple[Any, ...] | None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        topic = message.topic.value
        if topic == self.session.marker_topic:
            self.session.on_marker(payload)
            return None
        inbound = self.rt.topics.parse(topic)
        if inbound is None or self.db is None:
            return None
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        expiry_left = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        return (
            self.db.partition_of(inbound.device),
            topic,
            payload,
            bool(message.retain),
            response_topic or None,
            correlation,
            expiry_left,
            self.session.queued_since,
            time.time(),
        )


class Inbox:
    """Rows of the partitions this instance holds, to their engines in order."""

    def __init__(self, *, runtime: ClusterRuntime, db: PgDatabase) -> None:
        self.rt = runtime
        self.db = db
        self._wake = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen)
            while True:
                with anyio.move_on_after(POLL):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self._drain()

    async def _listen(self) -> None:
        """Wake the drain on every batch the intake commits (LISTEN/NOTIFY; polling covers a gap)."""
        while True:
            try:
                kwargs: dict[str, Any] = {"autocommit": True}
                if self.db.password is not None:
                    kwargs["password"] = self.db.password
                async with await psycopg.AsyncConnection.connect(self.db.conninfo, **kwargs) as conn:
                    await conn.execute(f'LISTEN "{self.db.schema}_inbox"')
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("inbox notifications: %s", exc)
                await anyio.sleep(1.0)

    async def _drain(self) -> None:
        while self.db.writable:
            held = [p for p, part in self.rt.partitions.items() if part.lease.valid()]
            if not held:
                return
            try:
                rows = self._take(held, 100)
                pushes = self._take_forwarded(held, 100)
                if not rows and not pushes:
                    return
                handled = applied = 0
                for row in rows:
                    if not await self._handle(row):
                        break  # the rest waits: a device's commands are taken in order
                    handled += 1
                for push in pushes:
                    if not await self._apply(push):
                        break
                    applied += 1
                try:
                    await self.db.settled()  # the rows' commits decided before the inbox is read again
                except LeaseLost as exc:
                    log.info("inbox rows stay for the next owner: %s", exc)
                if handled < len(rows) or applied < len(pushes):
                    return
            except StoreUnavailable as exc:
                log.info("the inbox waits for the store: %s", exc)
                return
            await anyio.lowlevel.checkpoint()

    def _take(self, partitions: list[int], limit: int) -> list[tuple[Any, ...]]:
        with self.db.reading() as conn:
            return conn.execute(
                "SELECT seq, partition, topic, payload, retained, response_topic, correlation, expiry_left, "
                "queued_since, received_at FROM inbox WHERE partition = ANY(%s) ORDER BY seq LIMIT %s",
                (partitions, limit),
            ).fetchall()

    def _take_forwarded(self, partitions: list[int], limit: int) -> list[tuple[Any, ...]]:
        with self.db.reading() as conn:
            return conn.execute(
                "SELECT seq, partition, device, kind, body, source FROM forwarded "
                "WHERE partition = ANY(%s) ORDER BY seq LIMIT %s",
                (partitions, limit),
            ).fetchall()

    async def _apply(self, row: tuple[Any, ...]) -> bool:
        """Apply one push another instance received for a device served here, in the commit that
        deletes its row (twin.partitions.Partitions.forward); False when it stays for the next owner."""
        seq, partition, device, kind, body, source = row
        part = self.rt.partitions.get(partition)
        if part is None or not part.lease.valid():
            return False
        try:
            push = _forwarded(kind, body)
        except (ValueError, KeyError, TypeError) as exc:  # a bug, or a newer instance's kind: not kept
            log.warning("forwarded push %s of %s dropped: %s", seq, device, exc)
            push = None
        try:
            # engine.observe and engine.event do not suspend: no other task's write joins this commit
            with part.store.transaction():
                part.store.consume_forwarded(seq)
                if isinstance(push, ReportedPatch):
                    part.engine.observe(device, push, source=source)
                elif push is not None:
                    await part.engine.event(device, push[0], push[1])
        except LeaseLost as exc:
            log.info("forwarded push %s stays for the next owner: %s", seq, exc)
            return False
        PUSHES_FORWARDED.labels(self.rt.adapter.vendor, "taken").inc()
        return True

    async def _handle(self, row: tuple[Any, ...]) -> bool:
        """Hand one row to its partition's engine; False when it stays in the inbox (the partition
        is no longer served here, or the store could not take what was stored for it)."""
        seq, partition, topic, payload, retained, response_topic, correlation, expiry_left, queued, received = row
        part = self.rt.partitions.get(partition)
        if part is None or not part.lease.valid():
            return False
        engine = part.engine
        inbound = self.rt.topics.parse(topic)
        try:
            # One commit: the row goes with what the engine stores for it (the command, a refusal),
            # and every answer is published after it; a failed commit keeps the row and sends nothing.
            # engine.handle does not suspend, so no other task's write joins this transaction.
            with part.store.transaction():
                part.store.consume(seq)
                if inbound is None:
                    return True
                reply = None
                if response_topic:
                    reserved = (self.rt.topics.base, self.rt.homeassistant.prefix, DEFAULT_PREFIX)
                    if not _reply_allowed(response_topic, reserved):
                        error = ErrorInfo.of(
                            ErrorCode.INVALID_PAYLOAD, f"response topic not allowed under {self.rt.topics.base}/"
                        )
                        engine.refuse(inbound, bytes(payload), error, transaction=best_effort_transaction(payload))
                        return True
                    reply = ReplyTo(
                        topic=response_topic, correlation=None if correlation is None else bytes(correlation)
                    )
                arrival = _arrival(queued, received, expiry_left, time.time())
                await engine.handle(inbound, bytes(payload), retained=retained, reply=reply, arrival=arrival)
        except LeaseLost as exc:
            log.info("inbox row %s stays for the next owner: %s", seq, exc)
            return False
        return True


def _forwarded(kind: str, body: str) -> ReportedPatch | tuple[EventType, dict[str, Any]]:
    if kind == "report":
        return ReportedPatch.model_validate_json(body)
    if kind == "event":
        event = json.loads(body)
        return EventType(event["type"]), dict(event["data"])
    raise ValueError(f"unknown kind {kind!r}")


def _arrival(queued: float | None, received: float, expiry_left: float | None, now: float) -> Arrival:
    """The age a command had when the intake took it, plus its time in the inbox (an owner that died)."""
    return Arrival(
        queued_since=received if queued is None else min(queued, received),
        expiry_left=None if expiry_left is None else expiry_left - (now - received),
    )


def _reply_allowed(topic: str, reserved: tuple[str, ...]) -> bool:
    """Whether a command may be answered there: not a wildcard, a system topic, or under the
    bridge's own trees (its base topic, Home Assistant's discovery prefixes)."""
    if "+" in topic or "#" in topic or topic.startswith("$"):
        return False
    return not any(topic == r or topic.startswith(r + "/") for r in reserved)
