"""Slow clients cut off: deadlines for a request's head and body, and a cap of connections per client.

Uvicorn counts every open connection, and every request still receiving its body, against
``limit_concurrency`` and answers 503 beyond it, but it has no deadline for reading a request: a
client that opens connections and sends one byte every few seconds holds them as long as it likes
(150 such connections made every legitimate Segway push get 503 for a minute). :func:`guarded_protocol`
makes uvicorn's HTTP/1.1 protocol class (h11) that takes over that limit, with

- a **head deadline**: the request line and headers must be in within ``header_timeout`` of the
  connection being made (or of the previous response, on a kept-alive connection);
- a **body deadline**: the body must be in within ``body_timeout`` of the head;
- a **cap per client** (its IP address): a client with ``max_connections_per_client`` connections
  open gets its next one answered 503 and closed at once, so one host cannot take every slot;
- **room under pressure**: when a new connection, or a new request, finds ``limit`` connections
  open, the one that has waited longest for its request (more than ``evict_after``: a slow client,
  or an idle kept-alive connection) is closed to make room, so slow clients from many hosts still
  cannot keep a fast one out. A request that is in is never cut: only the wait for one is;
- a request that finds ``limit`` others in and being worked on is answered 503: only the
  application's work counts, not connections waiting for a request or still sending one.

A connection past a deadline, or closed to make room, is answered ``408 Request Timeout``; the
application, if it was reading the body, sees the client disconnect. Deadlines only run while a
request is being received: the application's own time (storing a push) is not limited here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_EVICT_AFTER",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS_PER_CLIENT",
    "ClientLimits",
    "LimitHit",
    "guarded_protocol",
]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 64
DEFAULT_EVICT_AFTER = 1.0

#: hears each connection cut off or request refused: ``"slow_header"``, ``"slow_body"``, ``"client_cap"``,
#: ``"evicted"`` or ``"busy"``
LimitHit = Callable[[str], None]

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 5\r\n\r\n"


@dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """What a client may hold of a server (seconds; None: no cap)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections_per_client: int | None = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    #: a full server closes a connection that has waited this long for its request, for a new one
    evict_after: float = DEFAULT_EVICT_AFTER


def guarded_protocol(
    limits: ClientLimits, *, limit: int | None = None, on_limit: LimitHit | None = None
) -> type[asyncio.Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)`` that enforces ``limits`` and ``limit``
    (in place of uvicorn's ``limit_concurrency``, which must then be None); one per server (it counts
    the connections of each client)."""
    per_client: dict[str, int] = {}
    #: the connections open (those closed to make room leave at once)
    open_: set[GuardedH11Protocol] = set()

    def hit(reason: str) -> None:
        if on_limit is not None:
            on_limit(reason)

    class GuardedH11Protocol(H11Protocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._app = self.app
            self._client_key: str | None = None
            self._deadline: asyncio.TimerHandle | None = None
            #: "head": waiting for a request's head; "body": for its body; "app": the app has it all
            self._phase = "head"
            #: when the phase began (the loop's clock)
            self._since = 0.0
            self._seen_cycle: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            peer = get_remote_addr(transport)
            key = None if peer is None else peer[0]
            cap = limits.max_connections_per_client
            if key is not None and cap is not None:
                if per_client.get(key, 0) >= cap:
                    # Refused before it counts: a client reconnecting in a loop must not fill the
                    # limit with connections that are about to close.
                    hit("client_cap")
                    self.transport = transport
                    transport.write(_BUSY)
                    transport.close()
                    return
                per_client[key] = per_client.get(key, 0) + 1
                self._client_key = key
            super().connection_made(transport)
            open_.add(self)
            self._expect("head")
            self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            open_.discard(self)
            key, self._client_key = self._client_key, None
            if key is not None:
                left = per_client.get(key, 1) - 1
                if left > 0:
                    per_client[key] = left
                else:
                    per_client.pop(key, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase == "head":  # this may be a request's head: uvicorn starts it in there
                self._make_room()
                self.app = service_unavailable if self._busy() else self._app
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            self._expect("head")  # kept alive: the next request has its head deadline too
            super().on_response_complete()  # which may start a pipelined request, in already
            if self.transport.is_closing():
                self._cancel()
            else:
                self._track()

        def _track(self) -> None:
            """Move on once the request's head, then its body, are in."""
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return
            if self._phase == "head" and cycle is not self._seen_cycle:
                self._seen_cycle = cycle  # a new request's head is in
                self._expect("body" if cycle.more_body else "app")
            elif self._phase == "body" and not cycle.more_body:
                self._expect("app")

        def _make_room(self) -> None:
            """At the limit, the connection waiting longest for its request goes (module doc)."""
            if limit is None or len(open_) < limit:
                return
            now = self.loop.time()
            waiting = [
                c
                for c in open_
                if c is not self
                and c._phase in ("head", "body")
                and now - c._since >= limits.evict_after
                and not c.transport.is_closing()
            ]
            if waiting:
                hit("evicted")
                victim = min(waiting, key=lambda c: c._since)
                open_.discard(victim)  # room now, not once its close is processed
                victim._cut()

        def _busy(self) -> bool:
            """``limit`` requests are in and being worked on: the next is refused. One still being
            received does not count: a slow client's would, and a fast one's is in a moment later."""
            if limit is None or sum(c._phase == "app" for c in open_) < limit:
                return False
            hit("busy")
            return True

        def _expect(self, phase: str) -> None:
            self._cancel()
            self._phase = phase
            self._since = self.loop.time()
            timeout = {"head": limits.header_timeout, "body": limits.body_timeout}.get(phase)
            if timeout is not None:
                self._deadline = self.loop.call_later(timeout, self._too_slow, phase)

        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self, phase: str) -> None:
            self._deadline = None
            if self.transport.is_closing() or self._phase != phase:
                return
            hit(f"slow_{'header' if phase == 'head' else phase}")
            self._cut()

        def _cut(self) -> None:
            self._cancel()
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedH11Protocol
