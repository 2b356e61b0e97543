"""What an engine keeps while its store cannot write (a full disk), to catch up once it can.

- **outcomes** decided meanwhile (a confirmation, a vendor's refusal, an action's result) are kept
  and decided again, never by a second vendor call;
- **devices** whose observed state the store could not take are saved and published once it can;
- **workers** wait for :attr:`StoreOutage.back` and then go on with the same command.

The store tells when writes fail and when they succeed again (``Store.writable_listeners``); the
runtime probes it once a second meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from contracts.errors import ErrorInfo
from contracts.messages import CommandStatus
from twin.store import StoreUnavailable, TwinStore

__all__ = ["Outcome", "StoreOutage"]

#: a final status, its error and its answer's data
Outcome = tuple[CommandStatus, ErrorInfo | None, dict[str, Any] | None]


class StoreOutage:
    def __init__(self, *, store: TwinStore, resave: Callable[[str], None]) -> None:
        self.store = store
        #: saves a device's twin again and publishes it (raises StoreUnavailable when it cannot)
        self.resave = resave
        #: command id -> the outcome decided while the store could not write it
        self.pending: dict[str, Outcome] = {}
        #: devices whose observed state is not stored yet
        self.unsaved: set[str] = set()
        self._back = anyio.Event()
        self._back.set()
        self._tg: TaskGroup | None = None
        store.writable_listeners.append(self._on_store)

    @property
    def back(self) -> anyio.Event:
        """Set while the store writes (a new one while it cannot)."""
        return self._back

    def start(self, tg: TaskGroup) -> None:
        self._tg = tg

    def _on_store(self, writable: bool) -> None:
        if writable:
            self._back.set()
        elif self._back.is_set():
            self._back = anyio.Event()
            if self._tg is not None:
                self._tg.start_soon(self._catch_up, self._back)

    async def _catch_up(self, back: anyio.Event) -> None:
        await back.wait()
        while self.unsaved:
            device = self.unsaved.pop()
            try:
                self.resave(device)
            except StoreUnavailable:
                self.unsaved.add(device)
                return  # down again: that outage catches up
