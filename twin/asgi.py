"""Serve an ASGI app on a real socket inside the running event loop.

Used by the push intake of adapters and by the vendor simulators, so tests and the demo talk to
them over real HTTP. Uvicorn is the server; binding to port 0 picks a free port, read back from the
bound socket. With a ``certificate`` it serves HTTPS (TLS 1.2 at least); the files are checked
before the server starts, so a wrong path or passphrase is one line (:class:`TlsSettingsError`)
and never a prompt on the terminal.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import uvicorn
from starlette.types import ASGIApp

from twin.http_guard import ClientLimits, LimitHit, guarded_protocol
from twin.tlsfiles import CertificateFiles, TlsSettingsError, load_certificate

__all__ = ["CertificateFiles", "ServedApp", "TlsSettingsError", "serve_asgi"]


@dataclass(frozen=True)
class ServedApp:
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _tls_options(certificate: CertificateFiles | None) -> dict[str, object]:
    if certificate is None:
        return {}
    # uvicorn would hand an encrypted key without passphrase to OpenSSL's terminal prompt
    load_certificate(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), certificate)
    return {
        "ssl_certfile": str(certificate.cert_file),
        "ssl_keyfile": None if certificate.key_file is None else str(certificate.key_file),
        "ssl_keyfile_password": certificate.passphrase,
    }


def _limits(limit: int | None, client_limits: ClientLimits | None, on_limit: LimitHit | None) -> dict[str, Any]:
    """uvicorn settings for ``limit`` concurrent connections, enforced by uvicorn, or, with
    ``client_limits``, by twin.http_guard's protocol (deadlines, caps, room for new clients)."""
    if client_limits is None:
        return {"limit_concurrency": limit}
    return {"limit_concurrency": None, "http": guarded_protocol(client_limits, limit=limit, on_limit=on_limit)}


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limit_concurrency: int | None = None,
    certificate: CertificateFiles | None = None,
    client_limits: ClientLimits | None = None,
    on_limit: LimitHit | None = None,
) -> AsyncIterator[ServedApp]:
    """Run ``app`` until the block exits (HTTPS with ``certificate``); yields where it listens.
    ``client_limits`` cuts slow clients off (``twin.http_guard``; ``on_limit`` hears each one)."""
    tls = _tls_options(certificate)
    # IPPROTO_TCP explicitly: asyncio turns Nagle off on accepted connections only when the listening
    # socket says it is TCP; without it every request stalls ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        **tls,  # type: ignore[arg-type]
        **_limits(limit_concurrency, client_limits, on_limit),
    )
    server = uvicorn.Server(config)
    bound_port = sock.getsockname()[1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            if server.should_exit:
                raise RuntimeError(f"HTTP server on {host}:{bound_port} failed to start")
            await anyio.sleep(0.01)
        try:
            yield ServedApp(host=host, port=bound_port, scheme="https" if tls else "http")
        finally:
            server.should_exit = True
    # uvicorn closed the listening socket on its way out; give queued accept callbacks a turn to see
    # that before the descriptor goes (closing it under them raised EBADF now and then).
    await anyio.lowlevel.checkpoint()
    sock.close()
