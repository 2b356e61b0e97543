"""Retention of the store: the journal keeps ``journal_days``, ended commands ``commands_days``
(an extension of the bridge).

Every reported change of a battery or a position is a journal entry, so a moving fleet's journal is
most of its store's growth; every command is a row of ~1.5 KB. Once a second, journal entries and
ended commands older than their retention go in batches of :data:`PRUNE_BATCH`, up to
:data:`PRUNE_BATCHES` a round with commands running in between; when nothing is old it costs one
read and no write transaction. ``0`` keeps everything. A replayed transaction is answered from the
store for ``commands_days``; after that the same transaction is a new command (README).
"""

from __future__ import annotations

import logging
import sqlite3
import time

import anyio
import anyio.lowlevel

from twin.extensions import BridgeContext, Extension
from twin.store import StoreUnavailable, TwinStore

__all__ = ["PRUNE_BATCH", "PRUNE_BATCHES", "StoreRetention"]

log = logging.getLogger(__name__)

#: journal entries past ``journal_days`` deleted per batch (~1 ms); up to PRUNE_BATCHES batches a
#: round, commands running in between, keep up with ~10,000 new entries a second
PRUNE_BATCH = 500
PRUNE_BATCHES = 20
INTERVAL = 1.0


class StoreRetention(Extension):
    def __init__(self, *, journal_days: float, commands_days: float) -> None:
        self.journal_days = journal_days
        self.commands_days = commands_days

    async def start(self, bridge: BridgeContext) -> None:
        if self.journal_days or self.commands_days:
            bridge.task_group.start_soon(self._run, bridge.store)

    async def _run(self, store: TwinStore) -> None:
        while True:
            await anyio.sleep(INTERVAL)
            try:
                await self.prune(store)
            except (sqlite3.Error, StoreUnavailable) as exc:  # busy or full disk: the next round tries again
                log.warning("store retention failed: %s", exc)

    async def prune(self, store: TwinStore) -> None:
        now = time.time()
        for days, prune in ((self.journal_days, store.prune_journal), (self.commands_days, store.prune_commands)):
            if not days:
                continue
            for _ in range(PRUNE_BATCHES):
                if prune(before=now - days * 86_400, limit=PRUNE_BATCH) < PRUNE_BATCH:
                    break
                await anyio.lowlevel.checkpoint()
