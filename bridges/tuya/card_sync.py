"""Reading and reconciling one lock's cards through the card API (used by the adapter)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from bridges.tuya.cards import (
    CardOperation,
    CardSpec,
    ManagedCard,
    ManagedCards,
    ReportedCard,
    card_view,
    plan_cards,
)
from bridges.tuya.client import PATHS, TuyaClient
from bridges.tuya.errors import DATA_NOT_EXIST
from bridges.tuya.models import CardInfo, CardOperateResult
from contracts.errors import ErrorCode
from twin.adapter import VendorError

__all__ = ["CardSync"]

#: hears each card operation's outcome: the operation and None, or the error it ended with

log = logging.getLogger(__name__)


def _not_found(exc: VendorError) -> bool:
    return exc.info.vendor_code == str(DATA_NOT_EXIST)


class CardSync:
    """The card API of one project, and the file of cards locktwin manages."""

    def __init__(self, *, client: TuyaClient, project_id: str, store: ManagedCards) -> None:
        self._client = client
        self._store = store
        self._project = project_id

    def _base(self, device_id: str) -> str:
        return PATHS["cards"].format(project_id=self._project, device_id=device_id)

    async def read(self, device_id: str) -> dict[str, ReportedCard]:
        """The managed cards as the cloud reports them, by card key (a card the cloud no longer
        knows is absent)."""
        cards: dict[str, ReportedCard] = {}
        query = PATHS["card_query"].format(project_id=self._project, device_id=device_id)
        for key, managed in self._store.cards(device_id).items():
            try:
                raw = await self._client.get(f"{query}/{managed.lock_card_id}")
            except VendorError as exc:
                if _not_found(exc):
                    continue
                raise
            info = CardInfo.model_validate(raw)
            frozen = managed.frozen if info.freeze_status is None else info.freeze_status == 1
            cards[key] = ReportedCard(
                lock_card_id=info.lock_card_id, begin=info.begin_time, end=info.end_time, frozen=frozen
            )
        return cards

    def view(self, device_id: str, cards: dict[str, ReportedCard]) -> dict[str, Any]:
        """Cards as they appear in reported state: by masked id."""
        managed = self._store.cards(device_id)
        return {
            managed[key].masked: card_view(c.begin, c.end, c.frozen)
            for key, c in sorted(cards.items(), key=lambda item: managed[item[0]].masked)
            if key in managed
        }

    async def plan(self, device_id: str, desired: dict[str, CardSpec]) -> list[CardOperation]:
        """The operations that make the lock match ``desired``, planned against what the cloud reports now."""
        key = functools.partial(self._store.key, device_id)
        reported = await self.read(device_id)
        managed = self._store.cards(device_id)
        for gone in managed.keys() - reported.keys() - {key(card_id) for card_id in desired}:
            self._store.remove(device_id, gone)  # gone from the lock and no longer wanted
        named = {k: card.masked for k, card in managed.items()}
        return plan_cards(desired, reported, named, key=key)

    async def execute(self, device_id: str, op: CardOperation, issued: dict[str, str]) -> None:
        """One planned operation; ``issued`` carries lock card ids from issue steps to later steps."""
        log.info("tuya card %s on %s: %s", op.masked, device_id, op.kind)
        if op.kind == "issue":
            if op.card_id is None:  # pragma: no cover - the planner always names the card it issues
                raise VendorError(ErrorCode.VENDOR_ERROR, "card issue without a card id")
            result = await self._operate("POST", self._base(device_id), {"card_id": op.card_id})
            if not result.lock_card_id:
                raise VendorError(ErrorCode.VENDOR_ERROR, f"issuing card {op.masked} gave no lock card id")
            issued[op.key] = result.lock_card_id
            self._store.put(
                device_id, op.key, ManagedCard(lock_card_id=result.lock_card_id, masked=op.masked, frozen=False)
            )
            return
        lock_card_id = op.lock_card_id or issued.get(op.key)
        if lock_card_id is None:  # pragma: no cover - the planner never emits this
            raise VendorError(ErrorCode.VENDOR_ERROR, "card operation without a lock card id")
        path = f"{self._base(device_id)}/{lock_card_id}"
        if op.kind == "modify":
            await self._operate("PUT", path, {"begin_time": op.begin, "end_time": op.end})
        elif op.kind in ("freeze", "unfreeze"):
            frozen = op.kind == "freeze"
            await self._operate("PUT", f"{path}/freeze-status", {"freeze_status": 1 if frozen else 0})
            self._store.put(device_id, op.key, ManagedCard(lock_card_id=lock_card_id, masked=op.masked, frozen=frozen))
        else:
            try:
                await self._operate("DELETE", path, None)
            except VendorError as exc:
                if not _not_found(exc):
                    raise
            self._store.remove(device_id, op.key)

    async def _operate(self, method: str, path: str, body: dict[str, Any] | None) -> CardOperateResult:
        result = CardOperateResult.model_validate(await self._client.request(method, path, body=body))
        if not result.operate_result:
            raise VendorError(ErrorCode.VENDOR_ERROR, "the card operation was not carried out", retryable=True)
        return result
