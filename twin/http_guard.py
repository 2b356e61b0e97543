"""Slow clients cut off: deadlines for a request's head and body, and a cap of connections per client.

Uvicorn counts every open connection against ``limit_concurrency`` and answers 503 beyond it, but it
has no deadline for reading a request: a client that opens connections and sends one byte every few
seconds holds them as long as it likes (150 such connections made every legitimate Segway push get
503 for a minute). :func:`guarded_protocol` makes uvicorn's HTTP/1.1 protocol class (h11) with

- a **head deadline**: the request line and headers must be in within ``header_timeout`` of the
  connection being made (or of the previous response, on a kept-alive connection);
- a **body deadline**: the body must be in within ``body_timeout`` of the head;
- a **cap per client** (its IP address): a client with ``max_connections_per_client`` connections
  open gets its next one answered 503 and closed at once, so one host cannot take every slot.

A connection past a deadline is answered ``408 Request Timeout`` and closed; the application, if it
was reading the body, sees the client disconnect. Deadlines only run while a request is being
received: the application's own time (storing a push) is not limited here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS_PER_CLIENT",
    "ClientLimits",
    "LimitHit",
    "guarded_protocol",
]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 32

#: hears each connection cut off: ``"slow_header"``, ``"slow_body"`` or ``"client_cap"``
LimitHit = Callable[[str], None]

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 5\r\n\r\n"


@dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """What a client may hold of a server (seconds; None: no cap)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections_per_client: int | None = DEFAULT_MAX_CONNECTIONS_PER_CLIENT


def guarded_protocol(limits: ClientLimits, *, on_limit: LimitHit | None = None) -> type[asyncio.Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)`` that enforces ``limits``; one per server
    (it counts the connections of each client)."""
    per_client: dict[str, int] = {}

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
            self._client_key: str | None = None
            self._deadline: asyncio.TimerHandle | None = None
            #: "head": waiting for a request's head; "body": for its body; "app": the app has it all
            self._phase = "head"
            self._seen_cycle: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            peer = get_remote_addr(transport)
            key = None if peer is None else peer[0]
            cap = limits.max_connections_per_client
            if key is not None and cap is not None:
                if per_client.get(key, 0) >= cap:
                    # Refused before uvicorn counts it: a client reconnecting in a loop must not
                    # fill ``limit_concurrency`` with connections that are about to close.
                    hit("client_cap")
                    self.transport = transport
                    transport.write(_BUSY)
                    transport.close()
                    return
                per_client[key] = per_client.get(key, 0) + 1
                self._client_key = key
            super().connection_made(transport)
            self._expect("head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            key, self._client_key = self._client_key, None
            if key is not None:
                left = per_client.get(key, 1) - 1
                if left > 0:
                    per_client[key] = left
                else:
                    per_client.pop(key, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
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

        def _expect(self, phase: str) -> None:
            self._cancel()
            self._phase = phase
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
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedH11Protocol
