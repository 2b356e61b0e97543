"""Extensions: what a bridge does beside its command path, each a small object with start/stop.

As Zigbee2MQTT's ``lib/extension``: the runtime owns the devices and the engine; an extension
(Home Assistant discovery, status polling, journal retention, a vendor's push intake) is given a
:class:`BridgeContext` at :meth:`Extension.start` (where it may start background tasks in the
context's task group) and hears the bridge's typed events on an :class:`EventBus`; one failing
listener never breaks the others. Extensions read the fleet through :class:`FleetView`, a
read-only view, and call the vendor through the :class:`~twin.gate.VendorGate` like everything else.

Events::

    Connected     the bridge (re)connected and republished its retained topics
    TwinChanged   a device's retained documents were published after a change
    Message       a message on one of the exact topics an extension declared
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from anyio.abc import TaskGroup

from contracts.topics import Topics
from twin.adapter import BridgeSink, DeviceInfo, ReportedPatch
from twin.gate import VendorGate
from twin.store import TwinRecord, TwinStore

if TYPE_CHECKING:
    from twin.config import BridgeOptions

__all__ = [
    "BridgeContext",
    "BridgeEvent",
    "Connected",
    "EventBus",
    "Extension",
    "FleetView",
    "Message",
    "TwinChanged",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connected:
    """The bridge (re)connected to the broker and republished its retained topics."""


@dataclass(frozen=True)
class TwinChanged:
    """``device``'s retained documents were published after a change."""

    device: str


@dataclass(frozen=True)
class Message:
    """A message on an exact topic an extension declared in :attr:`Extension.topics`."""

    topic: str
    payload: bytes


BridgeEvent = Connected | TwinChanged | Message
E = TypeVar("E", Connected, TwinChanged, Message)


class EventBus:
    """Typed events to their listeners, in subscription order; a listener that raises is logged."""

    def __init__(self) -> None:
        self._listeners: dict[type[Any], list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], listener: Callable[[E], None]) -> None:
        self._listeners[kind].append(listener)

    def emit(self, event: BridgeEvent) -> None:
        for listener in self._listeners.get(type(event), ()):
            try:
                listener(event)
            except Exception:  # one failing listener must not break the others
                log.exception("a listener of %s failed", type(event).__name__)


class FleetView(Protocol):
    """The fleet as extensions see it: read only."""

    def devices(self) -> Sequence[DeviceInfo]: ...

    def info(self, device: str) -> DeviceInfo | None: ...

    def twin(self, device: str) -> TwinRecord | None: ...

    def busy(self, device: str) -> bool:
        """Whether a command of the device is running (it reads the device's state itself)."""
        ...

    def gone(self) -> Sequence[str]:
        """Devices the store knows that the vendor no longer lists."""
        ...

    def last_observed(self, device: str) -> float | None:
        """When (monotonic) the device's state last came in, by any means (None: not this run)."""
        ...


@dataclass(frozen=True, kw_only=True)
class BridgeContext:
    """What an extension gets at start."""

    vendor: str
    topics: Topics
    options: BridgeOptions
    store: TwinStore
    fleet: FleetView
    gate: VendorGate
    bus: EventBus
    #: where vendor pushes and events go (the same the adapter gets)
    sink: BridgeSink
    #: a status read through the gate; None when it failed (logged; an offline device reads offline)
    read: Callable[[str], Awaitable[ReportedPatch | None]]
    #: publish a retained message (after the store's open transaction, if any, committed)
    publish_retained: Callable[[str, bytes], None]
    task_group: TaskGroup


class Extension:
    """A capability of a bridge with a lifecycle: constructed with its settings, started with the
    bridge's context once the engine runs, stopped (in reverse order) when the bridge stops."""

    #: exact topics it reads: the runtime subscribes to them and emits their messages as Message
    topics: tuple[str, ...] = ()

    async def start(self, bridge: BridgeContext) -> None:
        """Subscribe to events, start background tasks in ``bridge.task_group``."""

    async def stop(self) -> None:
        """Release what :meth:`start` took (background tasks end with the task group)."""
