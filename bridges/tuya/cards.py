"""Door-lock cards as desired state: the value model, the pure planner and the managed-card file.

``/set {"cards": {"<card_id>": {"begin": ..., "end": ..., "frozen": false}}}`` is reconciled by
:func:`plan_cards` against the cards the cloud reports: issue missing cards, modify changed
validity windows, freeze or unfreeze, delete cards locktwin manages that are no longer desired.
A card locktwin did not issue (or adopt by being desired) is never touched. Card ids leave this
module only masked (``****1234``).

A full card id is needed once: to issue the card. After that the lock knows it by its own
``lock_card_id``, and locktwin by a keyed digest of the id (:meth:`ManagedCards.key`), which is
enough to tell whether a desired card is one it manages. So the full id lives only in the
``/set`` command while it runs (the engine keeps its redacted form once it ended) and in memory
during the issue call; ``cards.json`` holds digests, masked ids and lock card ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from twin.files import private_file, write_private

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
    """``****`` plus the last four characters: the only form of a card id in state and logs (a
    masked id masks to itself)."""
    return f"****{card_id[-4:]}"


def _masked(card_id: object) -> bool:
    # no card id has a "*" (CARD_ID_PATTERN): a key starting with one is masked already
    return isinstance(card_id, str) and card_id.startswith("****")


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


def _masked_errors(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A refused ``cards`` value names its cards masked: pydantic puts a dict's keys, the card ids,
    in its errors' locations, and the error is published in the answer."""
    try:
        return handler(value)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False, include_input=False)[:5]:
            loc = [mask(part) if n == 0 and isinstance(part, str) else str(part) for n, part in enumerate(err["loc"])]
            parts.append(f"{'.'.join(loc) or 'cards'}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(parts)) from None


CardId = Annotated[str, Field(pattern=CARD_ID_PATTERN)]
#: the ``cards`` desired field: validated, then held as plain JSON
CARDS_TYPE = Annotated[
    dict[CardId, CardSpec], Field(max_length=200), AfterValidator(_plain), WrapValidator(_masked_errors)
]
_CARDS = TypeAdapter(dict[CardId, CardSpec])


def parse_cards(value: Any) -> dict[str, CardSpec]:
    return _CARDS.validate_python(value)


@dataclass(frozen=True, kw_only=True)
class ReportedCard:
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
    #: the card as locktwin knows it: the keyed digest of its id (:meth:`ManagedCards.key`)
    key: str
    #: how answers, events and logs name the card (``****1234``)
    masked: str
    #: the full card id: on an ``issue`` only, the one call that needs it
    card_id: str | None = None
    lock_card_id: str | None = None
    begin: int | None = None
    end: int | None = None

    def describe(self) -> dict[str, Any]:
        """The operation with the card id masked (for answers, events and logs)."""
        out: dict[str, Any] = {"op": self.kind, "card": self.masked}
        if self.begin is not None and self.end is not None:
            out.update(begin=from_ms(self.begin), end=from_ms(self.end))
        return out


def _same(card_id: str) -> str:
    return card_id


def plan_cards(
    desired: Mapping[str, CardSpec],
    reported: Mapping[str, ReportedCard],
    managed: Mapping[str, str],
    *,
    key: Callable[[str], str] = _same,
) -> list[CardOperation]:
    """The operations that make the lock's cards match ``desired`` (deletions first, then by key).

    ``desired`` is by card id; ``reported`` and ``managed`` (key -> masked id) are by card key,
    ``key`` turns a card id into its key."""
    wanted = {key(card_id): card_id for card_id in desired}
    ops: list[CardOperation] = []
    for card_key in sorted(managed.keys() - wanted.keys()):
        card = reported.get(card_key)
        if card is not None:
            ops.append(
                CardOperation(kind="delete", key=card_key, masked=managed[card_key], lock_card_id=card.lock_card_id)
            )
    for card_key, card_id in sorted(wanted.items()):
        spec = desired[card_id]
        begin, end = spec.window
        card = reported.get(card_key)
        lock_card_id = None if card is None else card.lock_card_id
        masked = mask(card_id)
        if card is None:
            ops.append(CardOperation(kind="issue", key=card_key, masked=masked, card_id=card_id))
        if card is None or (card.begin, card.end) != (begin, end):
            ops.append(
                CardOperation(
                    kind="modify", key=card_key, masked=masked, lock_card_id=lock_card_id, begin=begin, end=end
                )
            )
        known_frozen = False if card is None else card.frozen
        if known_frozen != spec.frozen:
            kind: OperationKind = "freeze" if spec.frozen else "unfreeze"
            ops.append(CardOperation(kind=kind, key=card_key, masked=masked, lock_card_id=lock_card_id))
    return ops


def card_view(begin: int | None, end: int | None, frozen: bool | None) -> dict[str, Any]:
    """A card as it appears in reported state (under its masked id)."""
    return {
        "begin": None if begin is None else from_ms(begin),
        "end": None if end is None else from_ms(end),
        "frozen": frozen,
    }


def redact_cards(value: Any) -> dict[str, Any]:
    """Desired cards as they may be published, journaled and kept: masked ids, validity windows (a
    value redacted already is given back as it is)."""
    if isinstance(value, dict) and value and all(_masked(card_id) for card_id in value):
        return value
    return {mask(cid): card_view(*spec.window, spec.frozen) for cid, spec in parse_cards(value).items()}


def cards_confirmed(value: Any, reported: Mapping[str, Any]) -> bool:
    """True once the reported (masked) cards are exactly the desired ones."""
    desired = parse_cards(value)
    expected = {mask(cid): card_view(*spec.window, spec.frozen) for cid, spec in desired.items()}
    return reported.get("cards") == expected


@dataclass(frozen=True, kw_only=True)
class ManagedCard:
    lock_card_id: str
    #: ``****1234``
    masked: str
    frozen: bool | None = None


#: ``cards.json`` since it keeps digests instead of card ids (format 1: ``{device: {card_id: ...}}``)
_FORMAT = 2


class ManagedCards:
    """The cards locktwin issued or adopted, per device, in a small JSON file (0600, written atomically).

    A card is known by :meth:`key`: HMAC-SHA256 of the device and card id under a random key of this
    file. Reading the file tells which lock card ids locktwin manages and their masked ids, not the
    card ids (someone who can read it can test a guessed id against it, as with the store's
    fingerprints: keep the data folder to the bridge's user). A file of format 1, which held the ids,
    is rewritten at once on load."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._devices: dict[str, dict[str, ManagedCard]] = {}
        self._secret = b""

    def load(self) -> None:
        raw = json.loads(private_file(self.path).read_text() or "{}") if self.path.exists() else {}
        if raw.get("format") == _FORMAT:
            self._secret = bytes.fromhex(raw["key"])
            self._devices = {
                device: {key: ManagedCard(**entry) for key, entry in cards.items()}
                for device, cards in raw["devices"].items()
            }
            return
        self._secret = secrets.token_bytes(32)
        self._devices = {
            device: {
                self.key(device, card_id): ManagedCard(
                    lock_card_id=entry["lock_card_id"], masked=mask(card_id), frozen=entry.get("frozen")
                )
                for card_id, entry in cards.items()
            }
            for device, cards in raw.items()
        }
        if raw:
            self._save()  # the ids of format 1 leave the file now

    def key(self, device_id: str, card_id: str) -> str:
        """How this file knows a card: a keyed digest of its id (stable for this file)."""
        if not self._secret:
            self._secret = secrets.token_bytes(32)
        message = f"{device_id}\x00{card_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def cards(self, device_id: str) -> dict[str, ManagedCard]:
        return dict(self._devices.get(device_id, {}))

    def put(self, device_id: str, key: str, card: ManagedCard) -> None:
        self._devices.setdefault(device_id, {})[key] = card
        self._save()

    def remove(self, device_id: str, key: str) -> None:
        if self._devices.get(device_id, {}).pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        doc = {
            "format": _FORMAT,
            "key": self._secret.hex(),
            "devices": {
                device: {
                    key: {"lock_card_id": c.lock_card_id, "masked": c.masked, "frozen": c.frozen}
                    for key, c in cards.items()
                }
                for device, cards in self._devices.items()
            },
        }
        write_private(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())
