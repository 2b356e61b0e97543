"""twin.http_guard on a real socket: what its deadlines leave alone (a kept-alive or pipelined
request whose application takes longer than the deadlines) and what they cut (a slow head on a
kept-alive connection). The attack itself: bridges/segway/tests/test_push_slow_clients.py."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from twin.asgi import serve_asgi
from twin.http_guard import ClientLimits

pytestmark = pytest.mark.anyio

LIMITS = ClientLimits(header_timeout=0.3, body_timeout=0.3, max_connections_per_client=2)
REQUEST = b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok"


async def slow(request: Request) -> PlainTextResponse:
    await request.body()
    await anyio.sleep(0.6)  # the application's own time: longer than both deadlines
    return PlainTextResponse("done")


APP = Starlette(routes=[Route("/slow", slow, methods=["POST"])])


async def read_answers(stream: anyio.abc.ByteStream, count: int) -> bytes:
    data = b""
    with anyio.fail_after(5):
        while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"done"):
            data += await stream.receive()
    return data


async def test_guard_leaves_pipelined_and_kept_alive_requests_alone() -> None:
    hits: list[str] = []
    async with (
        serve_asgi(APP, client_limits=LIMITS, on_limit=hits.append) as served,
        await anyio.connect_tcp(served.host, served.port) as conn,
    ):
        await conn.send(REQUEST + REQUEST)  # pipelined: the second waits for the first's answer
        answers = await read_answers(conn, 2)
        await conn.send(REQUEST)  # the same connection, kept alive
        again = await read_answers(conn, 1)
    assert answers.count(b"HTTP/1.1 200") == 2
    assert again.startswith(b"HTTP/1.1 200")
    assert hits == []


async def test_guard_cuts_a_slow_head_on_a_kept_alive_connection_and_caps_a_client() -> None:
    hits: list[str] = []
    async with serve_asgi(APP, client_limits=LIMITS, on_limit=hits.append) as served:
        async with await anyio.connect_tcp(served.host, served.port) as conn:
            await conn.send(REQUEST)
            assert (await read_answers(conn, 1)).startswith(b"HTTP/1.1 200")
            await conn.send(b"POST /slow HTTP/1.1\r\n")  # then nothing more
            with anyio.fail_after(5):
                assert (await conn.receive()).startswith(b"HTTP/1.1 408")
        async with await anyio.connect_tcp(served.host, served.port) as conn:
            await conn.send(REQUEST.replace(b"length: 2", b"length: 9"))  # 7 bytes of body never come
            with anyio.fail_after(5):
                assert (await conn.receive()).startswith(b"HTTP/1.1 408")
        async with (
            await anyio.connect_tcp(served.host, served.port),
            await anyio.connect_tcp(served.host, served.port),
            await anyio.connect_tcp(served.host, served.port) as third,
        ):
            with anyio.fail_after(5):
                refused = await third.receive()
    assert refused.startswith(b"HTTP/1.1 503")
    assert hits == ["slow_header", "slow_body", "client_cap"]


async def test_guard_refuses_only_when_requests_in_the_app_fill_the_limit() -> None:
    """With a limit of 2: a slow client sending its body does not count, two requests at work do."""
    hits: list[str] = []
    gate = anyio.Event()
    at_work: list[int] = []

    async def held(request: Request) -> PlainTextResponse:
        await request.body()
        at_work.append(1)
        await gate.wait()
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/slow", held, methods=["POST"])])
    async with (
        serve_asgi(app, limit_concurrency=2, client_limits=LIMITS, on_limit=hits.append) as served,
        await anyio.connect_tcp(served.host, served.port, local_host="127.0.0.2") as trickling,
        await anyio.connect_tcp(served.host, served.port, local_host="127.0.0.2") as first,
        await anyio.connect_tcp(served.host, served.port, local_host="127.0.0.3") as second,
        await anyio.connect_tcp(served.host, served.port, local_host="127.0.0.3") as third,
    ):
        await trickling.send(REQUEST.replace(b"length: 2", b"length: 9"))  # its body never ends
        await first.send(REQUEST)
        await second.send(REQUEST)
        with anyio.fail_after(5):
            while len(at_work) < 2:  # noqa: ASYNC110 - both in the app, held there
                await anyio.sleep(0.01)
        await third.send(REQUEST)
        with anyio.fail_after(5):
            refused = await third.receive()
        gate.set()
        answers = [await read_answers(c, 1) for c in (first, second)]
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 2
    assert refused.startswith(b"HTTP/1.1 503")
    assert [h for h in hits if h != "slow_body"] == ["busy"]  # the trickling one may be cut meanwhile
