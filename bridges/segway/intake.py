"""Segway's push intake as a bridge extension: the webhooks served while the bridge runs.

The runtime starts it after the engine (so a push finds the devices loaded) and stops it before
the engine. The server runs as a task of the bridge's task group, which owns its cancel scopes;
an adapter's own tests serve it on a sink of their own with :meth:`PushIntake.serving`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus

from bridges.segway.push import PushStats, create_push_app, open_push_ledger, push_client_limits
from bridges.segway.settings import SegwaySettings
from twin.adapter import BridgeSink
from twin.asgi import ServedApp, serve_asgi
from twin.extensions import BridgeContext, Extension

__all__ = ["PushIntake"]

log = logging.getLogger(__name__)


class PushIntake(Extension):
    """The four webhooks into the bridge's sink, with the ledger of stored pushes kept in its data folder."""

    def __init__(self, *, settings: SegwaySettings) -> None:
        self.settings = settings
        self.stats = PushStats()
        #: where it listens while served
        self.address: ServedApp | None = None
        self._stopping = anyio.Event()
        self._closed = anyio.Event()

    @asynccontextmanager
    async def serving(self, sink: BridgeSink) -> AsyncIterator[ServedApp]:
        """Listen while inside, storing pushes through ``sink``."""
        config = self.settings
        ledger = open_push_ledger(sink.data_dir, config)
        try:
            app = create_push_app(sink, config, stats=self.stats, ledger=ledger)
            async with serve_asgi(
                app,
                host=config.push_host,
                port=config.push_port,
                limit_concurrency=config.push_max_concurrency,
                certificate=config.push_certificate,
                client_limits=push_client_limits(config),
                on_limit=self.stats.count,
            ) as served:
                self.address = served
                log.info("segway push intake on %s", served.url)
                yield served
        finally:
            self.address = None
            ledger.close()

    async def start(self, bridge: BridgeContext) -> None:
        self._stopping, self._closed = anyio.Event(), anyio.Event()
        await bridge.task_group.start(self._serve, bridge.sink)

    async def _serve(self, sink: BridgeSink, *, task_status: TaskStatus[None]) -> None:
        try:
            async with self.serving(sink):
                task_status.started()
                await self._stopping.wait()
        finally:
            self._closed.set()

    async def stop(self) -> None:
        self._stopping.set()
        await self._closed.wait()
