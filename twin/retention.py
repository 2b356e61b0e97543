"""Retention of the store: the audit journal keeps ``journal_days`` (an extension of the bridge).

Every reported change of a battery or a position is a journal entry, so a moving fleet's journal is
most of its store's growth. Once a second, entries older than ``journal_days`` go in batches of
:data:`PRUNE_BATCH`, up to :data:`PRUNE_BATCHES` a round with commands running in between; when
nothing is old it costs one read and no write transaction. ``journal_days = 0`` keeps everything.
The ``commands`` table is kept, so a replayed transaction is answered from the store however old.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import anyio
import anyio.lowlevel

from twin.extensions import BridgeContext, Extension
from twin.store import Store

__all__ = ["PRUNE_BATCH", "PRUNE_BATCHES", "JournalRetention"]

log = logging.getLogger(__name__)

#: journal entries past ``journal_days`` deleted per batch (~1 ms); up to PRUNE_BATCHES batches a
#: round, commands running in between, keep up with ~10,000 new entries a second
PRUNE_BATCH = 500
PRUNE_BATCHES = 20
INTERVAL = 1.0


class JournalRetention(Extension):
    def __init__(self, *, days: float) -> None:
        self.days = days

    async def start(self, bridge: BridgeContext) -> None:
        if self.days:
            bridge.task_group.start_soon(self._run, bridge.store)

    async def _run(self, store: Store) -> None:
        while True:
            await anyio.sleep(INTERVAL)
            try:
                await self.prune(store)
            except sqlite3.Error as exc:  # busy or full disk: the next round tries again
                log.warning("journal retention failed: %s", exc)

    async def prune(self, store: Store) -> None:
        before = time.time() - self.days * 86_400
        for _ in range(PRUNE_BATCHES):
            if store.prune_journal(before=before, limit=PRUNE_BATCH) < PRUNE_BATCH:
                return
            await anyio.lowlevel.checkpoint()
