"""The HTTP client of every vendor client: httpx's API over aiohttp's transport (``httpx-aiohttp``).

httpx's own transport (httpcore) costs ~2 ms of CPU per request on these machines and slows down
as concurrency rises (measured on 2 cores: ~400 requests/s at 10 in flight, ~240 at 100, against
~1,100 and ~1,550 with the aiohttp transport, on a trivial local server); with it the same
``httpx.AsyncClient`` API does several times the requests/s (``bench/``: command latency and
throughput of a bridge). ``backend="httpx"`` keeps httpx's own transport; a ``transport`` given
explicitly (a test's ``httpx.MockTransport``) always wins.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

__all__ = ["HttpBackend", "make_async_client"]

HttpBackend = Literal["httpx", "aiohttp"]
#: what ``make_async_client`` uses when not told (the benchmarks switch it to measure both)
DEFAULT_BACKEND: HttpBackend = "aiohttp"


def make_async_client(
    *, transport: httpx.AsyncBaseTransport | None = None, backend: HttpBackend | None = None, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (same arguments) over the aiohttp transport unless told otherwise."""
    if transport is None and (backend or DEFAULT_BACKEND) == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport()
    return httpx.AsyncClient(transport=transport, **kwargs)
