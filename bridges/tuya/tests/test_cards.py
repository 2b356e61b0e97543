"""The card planner (pure), confirmation, masking and the managed-card file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


def reported_card(
    card_id: str, s: CardSpec, *, frozen: bool | None = None, lock_card_id: str | None = None
) -> ReportedCard:
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
    assert plan_cards({"CARD0001": s}, {"CARD0001": reported_card("CARD0001", s)}, {"CARD0001"}) == []


def test_plan_cards_changed_window_modifies() -> None:
    ops = plan_cards({"CARD0001": spec(60)}, {"CARD0001": reported_card("CARD0001", spec(30))}, {"CARD0001"})
    assert kinds(ops) == [("modify", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"
    assert ops[0].end == spec(60).window[1]


@pytest.mark.parametrize(("desired", "now", "kind"), [(True, False, "freeze"), (False, True, "unfreeze")])
def test_plan_cards_freeze_status(desired: bool, now: bool, kind: str) -> None:
    ops = plan_cards(
        {"CARD0001": spec(frozen=desired)}, {"CARD0001": reported_card("CARD0001", spec(), frozen=now)}, {"CARD0001"}
    )
    assert kinds(ops) == [(kind, "CARD0001")]


def test_plan_cards_unknown_freeze_status_is_set() -> None:
    card = ReportedCard(card_id="CARD0001", lock_card_id="x", begin=spec().window[0], end=spec().window[1], frozen=None)
    assert kinds(plan_cards({"CARD0001": spec()}, {"CARD0001": card}, {"CARD0001"})) == [("unfreeze", "CARD0001")]


def test_plan_cards_deletes_managed_not_desired() -> None:
    ops = plan_cards({}, {"CARD0001": reported_card("CARD0001", spec())}, {"CARD0001"})
    assert kinds(ops) == [("delete", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"


def test_plan_cards_never_touches_foreign_card() -> None:
    foreign = reported_card("FOREIGN9", spec())
    assert plan_cards({}, {"FOREIGN9": foreign}, set()) == []
    ops = plan_cards({"CARD0001": spec()}, {"FOREIGN9": foreign}, set())
    assert all(op.card_id != "FOREIGN9" for op in ops)


def test_plan_cards_managed_already_gone_needs_nothing() -> None:
    assert plan_cards({}, {}, {"CARD0001"}) == []


def test_plan_cards_deletions_first_then_sorted() -> None:
    ops = plan_cards(
        {"CARD000B": spec(), "CARD000A": spec(frozen=True)},
        {"CARD000Z": reported_card("CARD000Z", spec()), "CARD000A": reported_card("CARD000A", spec())},
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


def test_cards_type_same_masked_id_rejected() -> None:
    window = {"begin": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
    with pytest.raises(ValidationError, match="same four characters"):
        TypeAdapter(CARDS_TYPE).validate_python({"AAAA1234": window, "BBBB1234": window})


IDS = st.sampled_from([f"CARD{n:04d}" for n in range(8)])
SPECS = st.builds(
    lambda start, days, frozen: spec(start + days, frozen=frozen, start=start),
    st.integers(0, 3),
    st.integers(1, 3),
    st.booleans(),
)


def apply(ops: list, state: dict[str, ReportedCard]) -> dict[str, ReportedCard]:
    """A model lock: what the operations do to its cards."""
    state = dict(state)
    for op in ops:
        if op.kind == "issue":
            assert op.card_id not in state
            state[op.card_id] = ReportedCard(
                card_id=op.card_id, lock_card_id=f"new-{op.card_id}", begin=0, end=1, frozen=False
            )
            continue
        card = state[op.card_id]
        if op.kind == "delete":
            del state[op.card_id]
        elif op.kind == "modify":
            state[op.card_id] = ReportedCard(
                card_id=card.card_id, lock_card_id=card.lock_card_id, begin=op.begin, end=op.end, frozen=card.frozen
            )
        else:
            state[op.card_id] = ReportedCard(
                card_id=card.card_id,
                lock_card_id=card.lock_card_id,
                begin=card.begin,
                end=card.end,
                frozen=op.kind == "freeze",
            )
    return state


@settings(max_examples=200, deadline=None)
@given(
    desired=st.dictionaries(IDS, SPECS, max_size=5),
    on_lock=st.dictionaries(IDS, SPECS, max_size=5),
    managed_extra=st.sets(IDS, max_size=3),
    managed_share=st.integers(0, 5),
)
def test_plan_cards_converges_and_spares_foreign_cards(
    desired: dict[str, CardSpec], on_lock: dict[str, CardSpec], managed_extra: set[str], managed_share: int
) -> None:
    reported = {cid: reported_card(cid, s) for cid, s in on_lock.items()}
    managed = set(sorted(on_lock)[:managed_share]) | managed_extra
    ops = plan_cards(desired, reported, managed)
    after = apply(ops, reported)
    for cid, s in desired.items():
        assert (after[cid].begin, after[cid].end, after[cid].frozen) == (*s.window, s.frozen)
    for cid in managed - desired.keys():
        assert cid not in after
    for cid in reported.keys() - managed - desired.keys():
        assert after[cid] == reported[cid]  # foreign: untouched
    assert plan_cards(desired, after, managed | desired.keys()) == []  # converged
