"""The card planner (pure), confirmation, masking and the managed-card file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from bridges.tuya.cards import (
    CARDS_TYPE,
    CardSpec,
    ManagedCard,
    ManagedCards,
    ReportedCard,
    card_view,
    cards_confirmed,
    mask,
    parse_cards,
    plan_cards,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(days: int = 30, *, frozen: bool = False, start: int = 0) -> CardSpec:
    return CardSpec(begin=T0 + timedelta(days=start), end=T0 + timedelta(days=days), frozen=frozen)


def reported(card_id: str, s: CardSpec, *, frozen: bool | None = None, lock_card_id: str | None = None) -> ReportedCard:
    begin, end = s.window
    return ReportedCard(
        card_id=card_id,
        lock_card_id=lock_card_id or f"lc-{card_id}",
        begin=begin,
        end=end,
        frozen=s.frozen if frozen is None else frozen,
    )


def kinds(ops: list) -> list[tuple[str, str]]:
    return [(op.kind, op.card_id) for op in ops]


def test_plan_cards_issue_missing() -> None:
    ops = plan_cards({"CARD0001": spec()}, {}, set())
    assert kinds(ops) == [("issue", "CARD0001"), ("modify", "CARD0001")]
    assert ops[1].lock_card_id is None
    assert (ops[1].begin, ops[1].end) == spec().window


def test_plan_cards_issue_frozen_adds_freeze() -> None:
    ops = plan_cards({"CARD0001": spec(frozen=True)}, {}, set())
    assert kinds(ops) == [("issue", "CARD0001"), ("modify", "CARD0001"), ("freeze", "CARD0001")]


def test_plan_cards_in_sync_is_empty() -> None:
    s = spec()
    assert plan_cards({"CARD0001": s}, {"CARD0001": reported("CARD0001", s)}, {"CARD0001"}) == []


def test_plan_cards_changed_window_modifies() -> None:
    ops = plan_cards({"CARD0001": spec(60)}, {"CARD0001": reported("CARD0001", spec(30))}, {"CARD0001"})
    assert kinds(ops) == [("modify", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"
    assert ops[0].end == spec(60).window[1]


@pytest.mark.parametrize(("desired", "now", "kind"), [(True, False, "freeze"), (False, True, "unfreeze")])
def test_plan_cards_freeze_status(desired: bool, now: bool, kind: str) -> None:
    ops = plan_cards(
        {"CARD0001": spec(frozen=desired)}, {"CARD0001": reported("CARD0001", spec(), frozen=now)}, {"CARD0001"}
    )
    assert kinds(ops) == [(kind, "CARD0001")]


def test_plan_cards_unknown_freeze_status_is_set() -> None:
    card = ReportedCard(card_id="CARD0001", lock_card_id="x", begin=spec().window[0], end=spec().window[1], frozen=None)
    assert kinds(plan_cards({"CARD0001": spec()}, {"CARD0001": card}, {"CARD0001"})) == [("unfreeze", "CARD0001")]


def test_plan_cards_deletes_managed_not_desired() -> None:
    ops = plan_cards({}, {"CARD0001": reported("CARD0001", spec())}, {"CARD0001"})
    assert kinds(ops) == [("delete", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"


def test_plan_cards_never_touches_foreign_card() -> None:
    foreign = reported("FOREIGN9", spec())
    assert plan_cards({}, {"FOREIGN9": foreign}, set()) == []
    ops = plan_cards({"CARD0001": spec()}, {"FOREIGN9": foreign}, set())
    assert all(op.card_id != "FOREIGN9" for op in ops)


def test_plan_cards_managed_already_gone_needs_nothing() -> None:
    assert plan_cards({}, {}, {"CARD0001"}) == []


def test_plan_cards_deletions_first_then_sorted() -> None:
    ops = plan_cards(
        {"CARD000B": spec(), "CARD000A": spec(frozen=True)},
        {"CARD000Z": reported("CARD000Z", spec()), "CARD000A": reported("CARD000A", spec())},
        {"CARD000Z", "CARD000A"},
    )
    assert kinds(ops) == [
        ("delete", "CARD000Z"),
        ("freeze", "CARD000A"),
        ("issue", "CARD000B"),
        ("modify", "CARD000B"),
    ]


def test_card_operation_describe_masks_id() -> None:
    [op, *_] = plan_cards({"SECRET123456": spec()}, {}, set())
    described = op.describe()
    assert described == {"op": "issue", "card": "****3456"}
    assert "SECRET" not in str(plan_cards({"SECRET123456": spec()}, {}, set())[1].describe())


def test_mask_keeps_last_four() -> None:
    assert mask("04A1B2C3D4") == "****C3D4"


def test_card_spec_end_before_begin_rejected() -> None:
    with pytest.raises(ValidationError):
        CardSpec(begin=T0, end=T0)


def test_card_spec_naive_datetime_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_cards({"CARD0001": {"begin": "2026-01-01T00:00:00", "end": "2026-02-01T00:00:00+00:00"}})


def test_cards_type_validates_to_plain_json() -> None:
    value = TypeAdapter(CARDS_TYPE).validate_python(
        {"CARD0001": {"begin": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00+01:00"}}
    )
    assert value == {"CARD0001": {"begin": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00+01:00", "frozen": False}}
    assert TypeAdapter(CARDS_TYPE).validate_python(value) == value


@pytest.mark.parametrize("bad", ["abc", "has space1", "x" * 65])
def test_cards_type_bad_card_id_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(CARDS_TYPE).validate_python({bad: {"begin": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}})


def test_cards_confirmed_matches_masked_report() -> None:
    s = spec(frozen=True)
    value = {"CARD0001": s.model_dump(mode="json")}
    assert cards_confirmed(value, {"cards": {"****0001": card_view(*s.window, True)}})
    assert not cards_confirmed(value, {"cards": {"****0001": card_view(*s.window, False)}})
    assert not cards_confirmed(value, {"cards": {}})
    assert not cards_confirmed(value, {})
    extra = {"****0001": card_view(*s.window, True), "****0002": card_view(*s.window, False)}
    assert not cards_confirmed(value, {"cards": extra})


def test_cards_confirmed_empty_desired() -> None:
    assert cards_confirmed({}, {"cards": {}})


def test_managed_cards_survive_reload(tmp_path: Path) -> None:
    store = ManagedCards(path=tmp_path / "cards.json")
    store.put("dev1", "CARD0001", ManagedCard(lock_card_id="42", frozen=True))
    store.put("dev1", "CARD0002", ManagedCard(lock_card_id="43"))
    store.remove("dev1", "CARD0002")
    again = ManagedCards(path=tmp_path / "cards.json")
    again.load()
    assert again.cards("dev1") == {"CARD0001": ManagedCard(lock_card_id="42", frozen=True)}
    assert again.cards("other") == {}
