"""Door-lock cards as desired state: the value model, the pure planner and the managed-card file.

``/set {"cards": {"<card_id>": {"begin": ..., "end": ..., "frozen": false}}}`` is reconciled by
:func:`plan_cards` against the cards the cloud reports: issue missing cards, modify changed
validity windows, freeze or unfreeze, delete cards locktwin manages that are no longer desired.
A card locktwin did not issue (or adopt by being desired) is never touched. Card ids leave this
module only masked (``****1234``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "CARDS_TYPE",
    "CARD_ID_PATTERN",
    "CardOperation",
    "CardSpec",
    "ManagedCard",
    "ManagedCards",
    "ReportedCard",
    "card_view",
    "cards_confirmed",
    "mask",
    "parse_cards",
    "plan_cards",
    "redact_cards",
    "to_ms",
]

CARD_ID_PATTERN = r"^[A-Za-z0-9_-]{4,64}$"


def mask(card_id: str) -> str:
    """``****`` plus the last four characters: the only form of a card id in state and logs."""
    return f"****{card_id[-4:]}"


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class CardSpec(BaseModel):
    """One desired card: valid from ``begin`` to ``end``, optionally frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    begin: AwareDatetime
    end: AwareDatetime
    frozen: bool = False

    @model_validator(mode="after")
    def _window(self) -> CardSpec:
        if self.end <= self.begin:
            raise ValueError("end must be after begin")
        return self

    @property
    def window(self) -> tuple[int, int]:
        return to_ms(self.begin), to_ms(self.end)


def _plain(cards: dict[str, CardSpec]) -> dict[str, Any]:
    # reported state keys cards by masked id, so two desired cards must not mask alike
    if len({mask(card_id) for card_id in cards}) != len(cards):
        raise ValueError("two cards end in the same four characters; they would be indistinguishable when masked")
    # kept as JSON values so the store and retained topics hold plain data
    return {card_id: spec.model_dump(mode="json") for card_id, spec in cards.items()}


CardId = Annotated[str, Field(pattern=CARD_ID_PATTERN)]
#: the ``cards`` desired field: validated, then held as plain JSON
CARDS_TYPE = Annotated[dict[CardId, CardSpec], Field(max_length=200), AfterValidator(_plain)]
_CARDS = TypeAdapter(dict[CardId, CardSpec])


def parse_cards(value: Any) -> dict[str, CardSpec]:
    return _CARDS.validate_python(value)


@dataclass(frozen=True, kw_only=True)
class ReportedCard:
    card_id: str
    lock_card_id: str
    begin: int | None
    end: int | None
    #: None when the cloud does not say and locktwin never set it
    frozen: bool | None


OperationKind = Literal["issue", "modify", "freeze", "unfreeze", "delete"]


@dataclass(frozen=True, kw_only=True)
class CardOperation:
    """One vendor call of a plan; ``lock_card_id`` None means "the id the issue step returns"."""

    kind: OperationKind
    card_id: str
    lock_card_id: str | None = None
    begin: int | None = None
    end: int | None = None

    def describe(self) -> dict[str, Any]:
        """The operation with the card id masked (for answers, events and logs)."""
        out: dict[str, Any] = {"op": self.kind, "card": mask(self.card_id)}
        if self.begin is not None and self.end is not None:
            out.update(begin=from_ms(self.begin), end=from_ms(self.end))
        return out


def plan_cards(
    desired: Mapping[str, CardSpec], reported: Mapping[str, ReportedCard], managed_ids: Set[str]
) -> list[CardOperation]:
    """The operations that make the lock's cards match ``desired`` (deletions first, then by id)."""
    ops: list[CardOperation] = []
    for card_id in sorted(managed_ids - desired.keys()):
        card = reported.get(card_id)
        if card is not None:
            ops.append(CardOperation(kind="delete", card_id=card_id, lock_card_id=card.lock_card_id))
    for card_id, spec in sorted(desired.items()):
        begin, end = spec.window
        card = reported.get(card_id)
        lock_card_id = None if card is None else card.lock_card_id
        if card is None:
            ops.append(CardOperation(kind="issue", card_id=card_id))
        if card is None or (card.begin, card.end) != (begin, end):
            ops.append(CardOperation(kind="modify", card_id=card_id, lock_card_id=lock_card_id, begin=begin, end=end))
        known_frozen = False if card is None else card.frozen
        if known_frozen != spec.frozen:
            kind: OperationKind = "freeze" if spec.frozen else "unfreeze"
            ops.append(CardOperation(kind=kind, card_id=card_id, lock_card_id=lock_card_id))
    return ops


def card_view(begin: int | None, end: int | None, frozen: bool | None) -> dict[str, Any]:
    """A card as it appears in reported state (under its masked id)."""
    return {
        "begin": None if begin is None else from_ms(begin),
        "end": None if end is None else from_ms(end),
        "frozen": frozen,
    }


def redact_cards(value: Any) -> dict[str, Any]:
    """Desired cards as they may be published and journaled: masked ids, validity windows."""
    return {mask(cid): card_view(*spec.window, spec.frozen) for cid, spec in parse_cards(value).items()}


def cards_confirmed(value: Any, reported: Mapping[str, Any]) -> bool:
    """True once the reported (masked) cards are exactly the desired ones."""
    desired = parse_cards(value)
    expected = {mask(cid): card_view(*spec.window, spec.frozen) for cid, spec in desired.items()}
    return reported.get("cards") == expected


@dataclass(frozen=True, kw_only=True)
class ManagedCard:
    lock_card_id: str
    frozen: bool | None = None


class ManagedCards:
    """The cards locktwin issued or adopted, per device, in a small JSON file (written atomically)."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._devices: dict[str, dict[str, ManagedCard]] = {}

    def load(self) -> None:
        if not self.path.exists():
            return
        raw = json.loads(self.path.read_text())
        self._devices = {
            device: {cid: ManagedCard(**entry) for cid, entry in cards.items()} for device, cards in raw.items()
        }

    def cards(self, device_id: str) -> dict[str, ManagedCard]:
        return dict(self._devices.get(device_id, {}))

    def put(self, device_id: str, card_id: str, card: ManagedCard) -> None:
        self._devices.setdefault(device_id, {})[card_id] = card
        self._save()

    def remove(self, device_id: str, card_id: str) -> None:
        if self._devices.get(device_id, {}).pop(card_id, None) is not None:
            self._save()

    def _save(self) -> None:
        doc = {
            device: {cid: {"lock_card_id": c.lock_card_id, "frozen": c.frozen} for cid, c in cards.items()}
            for device, cards in self._devices.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
