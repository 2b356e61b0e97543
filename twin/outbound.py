"""Everything the engine publishes, rendered from the store's records.

Publishing never blocks the engine: the :class:`Transport` (the runtime's publisher, given once
with :meth:`Outbound.use`) queues each message for the MQTT client. Retained topics are
republished from the store on reconnect, and final answers stay marked unanswered until the broker
took them.

A device's retained ``twin`` and ``state`` are coalesced: a change marks the device, and the
documents are rendered and published once per ``coalesce`` window (while :meth:`run` runs), and
only when they differ from what was last published (Zigbee2MQTT's "state written on change").
One command changes its twin four or five times in a few milliseconds (accepted, sent,
acknowledged, the observed state, the outcome); publishing each was most of a command's cost.
Every final answer (and every read) about a device first publishes that device's pending documents,
so a client that sees it reads a retained state that matches; an ``accepted`` answer does not wait
for the window. While the store has a transaction open, messages wait for its commit: nothing is
announced before it is durable.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from contracts.errors import ErrorInfo
from contracts.messages import (
    ActionInfo,
    BridgeActions,
    BridgeDevices,
    CommandStatus,
    DeviceEntry,
    EventType,
    Response,
)
from contracts.topics import Topics
from twin.adapter import ActionSpec, DesiredField, DeviceInfo
from twin.document import render_event, render_state, render_twin, response_for
from twin.jsonenc import dumps
from twin.redaction import redactor
from twin.store import CommandRecord, StoreUnavailable, TwinRecord, TwinStore

__all__ = ["DEVICES_PAGE_BYTES", "Outbound", "ReplyTo", "Transport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplyTo:
    """An MQTT v5 Response Topic with its Correlation Data."""

    topic: str
    correlation: bytes | None = None


class Transport(Protocol):
    """Where messages go (:class:`twin.publisher.Publisher` is one)."""

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        correlation: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> None: ...

    def feed(self, steps: Iterator[Callable[[], None]]) -> None:
        """Run a large batch of sending steps as there is room (the fleet's republish)."""
        ...

    @property
    def maximum_packet_size(self) -> int | None:
        """The broker's limit on one message, None: it set none."""
        ...


#: a page of the device list holds this much JSON at most, unless the broker takes less (its Maximum
#: Packet Size, less room for the topic and the packet's header)
DEVICES_PAGE_BYTES = 64 * 1024
_PACKET_ROOM = 512
_PAGE_ENVELOPE = 128  # {"vendor": ..., "devices": [], "page": ..., "pages": ...} around the entries
_PAGES_KEY = "devices_pages"


class Outbound:
    def __init__(
        self,
        *,
        topics: Topics,
        store: TwinStore,
        held: Callable[[str], bool],
        current_of: Callable[[str], CommandRecord | None],
        latest_of: Callable[[str], CommandRecord | None] = lambda device: None,
        on_published: Callable[[str], None] | None = None,
    ) -> None:
        self.topics = topics
        self.store = store
        #: whether the device is held (its twin shows ``hold``)
        self.held = held
        #: the command in flight on a device (its state shows LOCKING/UNLOCKING)
        self.current_of = current_of
        #: the device's latest command when still in memory (else it is read from the store)
        self.latest_of = latest_of
        #: called with a device id after its documents were published (twin.extensions.TwinChanged)
        self.on_published = on_published
        self._transport: Transport | None = None
        self.twins: dict[str, TwinRecord] = {}
        self.devices: list[DeviceInfo] = []
        self.fields: Mapping[str, DesiredField] = {}
        self.actions: Mapping[str, ActionSpec] = {}
        #: devices whose retained documents are due (an ordered set)
        self._dirty: dict[str, None] = {}
        #: per device, hashes of its twin and state as last published (publish only on change); keyed
        #: by the device id the twins already hold, so a fleet pays two small ints per device
        self._published: dict[str, tuple[int, int]] = {}
        self._wake: anyio.Event | None = None

    def use(self, transport: Transport) -> None:
        """Where messages go from now on (messages before it are dropped: nothing is connected)."""
        self._transport = transport

    @property
    def page_bytes(self) -> int:
        """The most JSON on one page of the retained device list."""
        limit = None if self._transport is None else self._transport.maximum_packet_size
        return DEVICES_PAGE_BYTES if limit is None else max(1024, min(DEVICES_PAGE_BYTES, limit - _PACKET_ROOM))

    def attach(
        self,
        twins: dict[str, TwinRecord],
        devices: list[DeviceInfo],
        fields: Mapping[str, DesiredField],
        actions: Mapping[str, ActionSpec],
    ) -> None:
        self.twins, self.devices, self.fields, self.actions = twins, devices, fields, actions

    def _send(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        if self.store.in_transaction:  # nothing is announced before it is durable (twin.store)
            self.store.after_commit(
                functools.partial(self._send, topic, payload, retain=retain, correlation=correlation, on_sent=on_sent)
            )
        elif self._transport is not None:
            self._transport.send(topic, payload, retain=retain, correlation=correlation, on_sent=on_sent)

    # -- answers ---------------------------------------------------------------------------------
    def _reply(
        self, device: str, suffix: str, reply: ReplyTo | None, *, settled: bool = True
    ) -> tuple[str, bytes | None]:
        """Where an answer goes; a ``settled`` answer (final, or a read) goes after the device's pending
        documents, so that a client reading them after it sees what it says."""
        if settled:
            self.flush(device)
        if reply is not None:
            return reply.topic, reply.correlation
        return self.topics.response(device, suffix), None

    def rejected(
        self, device: str, suffix: str, transaction: str | None, error: ErrorInfo, reply: ReplyTo | None
    ) -> None:
        topic, correlation = self._reply(device, suffix, reply, settled=False)
        body = Response(transaction=transaction, command_id=None, status=CommandStatus.REJECTED, error=error)
        self._send(topic, dumps(body.model_dump(mode="json")), correlation=correlation)

    def answer(
        self,
        cmd: CommandRecord,
        suffix: str,
        reply: ReplyTo | None,
        *,
        status: CommandStatus | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        final = (status or cmd.status).is_final
        topic, correlation = self._reply(cmd.device, suffix, reply, settled=final)
        body = response_for(cmd, status)
        if data is not None:
            body = body.model_copy(update={"data": data})
        on_sent = None
        if status is None and cmd.status.is_final:
            command_id = cmd.id
            on_sent = lambda: self.store.mark_answered(command_id)  # noqa: E731
        self._send(topic, dumps(body.model_dump(mode="json")), correlation=correlation, on_sent=on_sent)

    def command_final(self, cmd: CommandRecord, *, data: dict[str, Any] | None = None) -> None:
        reply = ReplyTo(cmd.reply_topic, cmd.correlation) if cmd.reply_topic else None
        self.answer(cmd, "set" if cmd.kind == "set" else cmd.name, reply, data=data)

    def get_answer(
        self,
        device: str,
        transaction: str | None,
        reply: ReplyTo | None,
        *,
        data: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        topic, correlation = self._reply(device, "get", reply)
        status = CommandStatus.FAILED if error is not None else CommandStatus.SUCCEEDED
        body = Response(transaction=transaction, command_id=None, status=status, data=data, error=error)
        self._send(topic, dumps(body.model_dump(mode="json")), correlation=correlation)

    # -- events ----------------------------------------------------------------------------------
    def event(self, device: str, type: EventType, data: dict[str, Any]) -> None:
        self._send(self.topics.event(device), dumps(render_event(type, data)))

    def command_event(self, cmd: CommandRecord, before: CommandStatus | None) -> None:
        self.event(
            cmd.device,
            EventType.COMMAND,
            {
                "command_id": cmd.id,
                "transaction": cmd.transaction,
                "name": cmd.name,
                "source": cmd.source,
                "from": None if before is None else before.value,
                "to": cmd.status.value,
                "error": cmd.error,
                **({"parent": cmd.parent, "target": cmd.value.get("target")} if cmd.parent else {}),
            },
        )

    # -- retained --------------------------------------------------------------------------------
    def twin_doc(self, device: str) -> dict[str, Any]:
        twin = self.twins[device]
        last = self.latest_of(device)
        if last is None or last.id != twin.command_id:
            last = self.store.command(twin.command_id) if twin.command_id else None
        return render_twin(twin, last, hold=self.held(device), redact=self._redactor(last))

    def _redactor(self, cmd: CommandRecord | None) -> Callable[[Any], Any]:
        if cmd is None:
            return lambda value: value
        return redactor(cmd.kind, cmd.name, fields=self.fields, actions=self.actions)

    def twin_changed(self, device: str) -> None:
        """The device's twin changed: publish its documents now, or at the end of the window."""
        self._dirty[device] = None
        if self._wake is None:
            self.flush(device)
        else:
            self._wake.set()

    async def run(self, coalesce: float) -> None:
        """Publish marked devices once per ``coalesce`` seconds (until cancelled)."""
        self._wake = anyio.Event()
        try:
            while True:
                await self._wake.wait()
                await anyio.sleep(coalesce)
                self._wake = anyio.Event()
                self.flush()
        finally:
            self._wake = None
            self.flush()

    def flush(self, device: str | None = None) -> None:
        """Publish the pending documents of one device, or of every marked device."""
        if device is not None:
            if device in self._dirty:
                self._publish_documents(device)
            return
        while self._dirty:
            self._publish_documents(next(iter(self._dirty)))

    def _publish_documents(self, device: str) -> None:
        self._dirty.pop(device, None)
        try:
            twin = self.twin_doc(device)
            state = render_state(self.twins[device], self.current_of(device))
        except ValueError:
            log.exception("cannot render the twin of %s", device)
            return
        twin_bytes, state_bytes = dumps(twin), dumps(state)
        digests = (hash(twin_bytes), hash(state_bytes))
        last = self._published.get(device, (None, None))
        self._published[device] = digests
        if last[0] != digests[0]:
            self._send(self.topics.twin(device), twin_bytes, retain=True)
        if last[1] != digests[1]:
            self._send(self.topics.state(device), state_bytes, retain=True)
        if self.on_published is not None:
            self.on_published(device)

    def send_retained(self, topic: str, payload: bytes) -> None:
        self._send(topic, payload, retain=True)

    def availability(self, device: str) -> None:
        online = self.twins[device].reported.get("online")
        if online is not None:
            self._send(self.topics.availability(device), b"online" if online else b"offline", retain=True)

    def actions_table(self) -> None:
        """The retained action table: how to call each vendor action (forms, validation before sending)."""
        table = BridgeActions(
            vendor=self.topics.vendor,
            actions={
                name: ActionInfo(
                    description=spec.description,
                    arguments=spec.arguments.model_json_schema(),
                    capability=spec.capability,
                    idempotent=spec.idempotent,
                    sensitive=spec.sensitive,
                )
                for name, spec in sorted(self.actions.items())
            },
        )
        self._send(self.topics.bridge_actions, dumps(table.model_dump(mode="json")), retain=True)

    def devices_list(self) -> None:
        """The retained device list, in pages of at most :attr:`page_bytes` (see ``BridgeDevices``);
        pages a longer list left behind are cleared."""
        pages: list[list[DeviceEntry]] = [[]]
        size = 0
        for info in self.devices:
            entry = DeviceEntry(
                id=info.id,
                name=info.name,
                model=info.model,
                capabilities=sorted(info.capabilities),
                actions=sorted(
                    n for n, a in self.actions.items() if a.capability is None or a.capability in info.capabilities
                ),
                desired_fields=sorted(n for n, f in self.fields.items() if f.capability in info.capabilities),
            )
            entry_size = len(dumps(entry.model_dump(mode="json"))) + 1
            if pages[-1] and size + entry_size > self.page_bytes - _PAGE_ENVELOPE:
                pages.append([])
                size = 0
            pages[-1].append(entry)
            size += entry_size
        before = int(self.store.meta(_PAGES_KEY) or 1)
        try:
            with self.store.transaction():  # the count is durable before the pages it describes are out
                self.store.set_meta(_PAGES_KEY, str(len(pages)))
                self._send_pages(pages, before)
        except StoreUnavailable:
            log.warning("the device list's page count could not be stored (the store cannot write)")
            self._send_pages(pages, before)

    def _send_pages(self, pages: list[list[DeviceEntry]], before: int) -> None:
        for number, entries in enumerate(pages):
            body = BridgeDevices(vendor=self.topics.vendor, devices=entries, page=number, pages=len(pages))
            self._send(self.topics.bridge_devices_page(number), dumps(body.model_dump(mode="json")), retain=True)
        for number in range(len(pages), before):
            self._send(self.topics.bridge_devices_page(number), b"", retain=True)  # an empty retained deletes

    def republish_all(self) -> None:
        """After (re)connecting: every retained topic from the store and the answers not delivered yet.

        Those answers go first, each after its device's documents; the rest of the fleet is fed to
        the publisher one device at a time, rendered when there is room to send it.
        """
        self.actions_table()
        self.devices_list()
        self.republish_devices()

    def republish_devices(self) -> None:
        """Every device's retained documents and the final answers not delivered yet (answers first),
        without the bridge's own documents (a partition's engine, twin.cluster)."""
        self._published.clear()  # the broker may have lost them: publish everything again
        ahead: set[str] = set()
        for cmd in self.store.unanswered_finals():
            if cmd.device in self.twins and cmd.device not in ahead:
                ahead.add(cmd.device)
                self._republish_device(cmd.device)
            self.command_final(cmd, data=None)
        steps = (functools.partial(self._republish_device, d.id) for d in self.devices if d.id not in ahead)
        if self._transport is not None:
            self._transport.feed(steps)

    def _republish_device(self, device: str) -> None:
        self._publish_documents(device)
        self.availability(device)
