"""The HTTP client of every vendor client: httpx's API over aiohttp's transport (``httpx-aiohttp``).

httpx's own transport (httpcore) costs ~2 ms of CPU per request on these machines and slows down
as concurrency rises (measured on 2 cores: ~400 requests/s at 10 in flight, ~240 at 100, against
~1,100 and ~1,550 with the aiohttp transport, on a trivial local server); with it the same
``httpx.AsyncClient`` API does several times the requests/s (``bench/``: command latency and
throughput of a bridge). ``backend="httpx"`` keeps httpx's own transport; a ``transport`` given
explicitly (a test's ``httpx.MockTransport``) always wins.

Every request a client makes is counted by the meter of the context it runs in
(:data:`REQUEST_METER`): the vendor-call gate sets one around each call, so the budget ledger
(:mod:`twin.ledger`) counts the vendor's requests (a Tuya unlock is two, a Smartcar full read four,
a token refresh one), not the bridge's calls. The pool allows ``MAX_CONNECTIONS`` connections: the
gate's adaptive limit is what bounds concurrency, not the HTTP client's default of 100.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Literal

import httpx

__all__ = ["MAX_CONNECTIONS", "REQUEST_METER", "HttpBackend", "make_async_client"]

HttpBackend = Literal["httpx", "aiohttp"]
#: what ``make_async_client`` uses when not told (the benchmarks switch it to measure both)
DEFAULT_BACKEND: HttpBackend = "aiohttp"
#: connections of one client at most (the gate's ceiling is the real bound)
MAX_CONNECTIONS = 2048
#: called once for every request sent, in the context that sends it (None: nobody counts)
REQUEST_METER: ContextVar[Callable[[], None] | None] = ContextVar("locktwin_request_meter", default=None)


async def _count(request: httpx.Request) -> None:
    meter = REQUEST_METER.get()
    if meter is not None:
        meter()


def make_async_client(
    *, transport: httpx.AsyncBaseTransport | None = None, backend: HttpBackend | None = None, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (same arguments) over the aiohttp transport unless told otherwise."""
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=64)
    if transport is None and (backend or DEFAULT_BACKEND) == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    hooks = dict(kwargs.pop("event_hooks", None) or {})
    hooks["request"] = [_count, *hooks.get("request", [])]
    kwargs.setdefault("limits", limits)
    return httpx.AsyncClient(transport=transport, event_hooks=hooks, **kwargs)
