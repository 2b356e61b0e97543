"""The card planner (pure), confirmation, masking and the managed-card file."""

from __future__ import annotations

import json
import stat
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
        lock_card_id=lock_card_id or f"lc-{card_id}",
        begin=begin,
        end=end,
        frozen=s.frozen if frozen is None else frozen,
    )


def managed(*card_ids: str) -> dict[str, str]:
    """Managed cards as the planner takes them (key -> masked id; here the key is the id itself)."""
    return {card_id: mask(card_id) for card_id in card_ids}


def kinds(ops: list) -> list[tuple[str, str]]:
    return [(op.kind, op.key) for op in ops]


def test_plan_cards_issue_missing() -> None:
    ops = plan_cards({"CARD0001": spec()}, {}, {})
    assert kinds(ops) == [("issue", "CARD0001"), ("modify", "CARD0001")]
    assert ops[1].lock_card_id is None
    assert (ops[1].begin, ops[1].end) == spec().window


def test_plan_cards_issue_frozen_adds_freeze() -> None:
    ops = plan_cards({"CARD0001": spec(frozen=True)}, {}, {})
    assert kinds(ops) == [("issue", "CARD0001"), ("modify", "CARD0001"), ("freeze", "CARD0001")]


def test_plan_cards_in_sync_is_empty() -> None:
    s = spec()
    assert plan_cards({"CARD0001": s}, {"CARD0001": reported_card("CARD0001", s)}, managed("CARD0001")) == []


def test_plan_cards_changed_window_modifies() -> None:
    ops = plan_cards({"CARD0001": spec(60)}, {"CARD0001": reported_card("CARD0001", spec(30))}, managed("CARD0001"))
    assert kinds(ops) == [("modify", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"
    assert ops[0].end == spec(60).window[1]


@pytest.mark.parametrize(("desired", "now", "kind"), [(True, False, "freeze"), (False, True, "unfreeze")])
def test_plan_cards_freeze_status(desired: bool, now: bool, kind: str) -> None:
    ops = plan_cards(
        {"CARD0001": spec(frozen=desired)},
        {"CARD0001": reported_card("CARD0001", spec(), frozen=now)},
        managed("CARD0001"),
    )
    assert kinds(ops) == [(kind, "CARD0001")]


def test_plan_cards_unknown_freeze_status_is_set() -> None:
    card = ReportedCard(lock_card_id="x", begin=spec().window[0], end=spec().window[1], frozen=None)
    assert kinds(plan_cards({"CARD0001": spec()}, {"CARD0001": card}, managed("CARD0001"))) == [
        ("unfreeze", "CARD0001")
    ]


def test_plan_cards_deletes_managed_not_desired() -> None:
    ops = plan_cards({}, {"CARD0001": reported_card("CARD0001", spec())}, managed("CARD0001"))
    assert kinds(ops) == [("delete", "CARD0001")]
    assert ops[0].lock_card_id == "lc-CARD0001"


def test_plan_cards_never_touches_foreign_card() -> None:
    foreign = reported_card("FOREIGN9", spec())
    assert plan_cards({}, {"FOREIGN9": foreign}, {}) == []
    ops = plan_cards({"CARD0001": spec()}, {"FOREIGN9": foreign}, {})
    assert all(op.key != "FOREIGN9" for op in ops)


def test_plan_cards_managed_already_gone_needs_nothing() -> None:
    assert plan_cards({}, {}, managed("CARD0001")) == []


def test_plan_cards_deletions_first_then_sorted() -> None:
    ops = plan_cards(
        {"CARD000B": spec(), "CARD000A": spec(frozen=True)},
        {"CARD000Z": reported_card("CARD000Z", spec()), "CARD000A": reported_card("CARD000A", spec())},
        managed("CARD000Z", "CARD000A"),
    )
    assert kinds(ops) == [
        ("delete", "CARD000Z"),
        ("freeze", "CARD000A"),
        ("issue", "CARD000B"),
        ("modify", "CARD000B"),
    ]


def test_card_operation_describe_masks_id() -> None:
    [op, *_] = plan_cards({"SECRET123456": spec()}, {}, {})
    described = op.describe()
    assert described == {"op": "issue", "card": "****3456"}
    assert "SECRET" not in str(plan_cards({"SECRET123456": spec()}, {}, {})[1].describe())


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


def test_managed_cards_survive_reload_by_key_not_id(tmp_path: Path) -> None:
    store = ManagedCards(path=tmp_path / "cards.json")
    store.load()
    one, two = store.key("dev1", "CARD0001"), store.key("dev1", "CARD0002")
    assert len({one, two, store.key("dev2", "CARD0001")}) == 3  # per card and per lock
    store.put("dev1", one, ManagedCard(lock_card_id="42", masked="****0001", frozen=True))
    store.put("dev1", two, ManagedCard(lock_card_id="43", masked="****0002"))
    store.remove("dev1", two)
    again = ManagedCards(path=tmp_path / "cards.json")
    again.load()
    assert again.key("dev1", "CARD0001") == one
    assert again.cards("dev1") == {one: ManagedCard(lock_card_id="42", masked="****0001", frozen=True)}
    assert again.cards("other") == {}
    assert "CARD0001" not in (tmp_path / "cards.json").read_text()
    assert stat.S_IMODE((tmp_path / "cards.json").stat().st_mode) == 0o600


def test_managed_cards_file_with_ids_rewritten_without(tmp_path: Path) -> None:
    # format 1 kept the full card ids: loading it keeps the cards and drops the ids at once
    path = tmp_path / "cards.json"
    path.write_text(json.dumps({"dev1": {"CARD0001": {"lock_card_id": "42", "frozen": None}}}))
    path.chmod(0o644)
    store = ManagedCards(path=path)
    store.load()
    assert store.cards("dev1") == {store.key("dev1", "CARD0001"): ManagedCard(lock_card_id="42", masked="****0001")}
    assert "CARD0001" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cards_type_errors_name_cards_masked() -> None:
    bad = {"SECRETCARD-123456": {"begin": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "bad id 9876": {}}
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(CARDS_TYPE).validate_python(bad)
    text = str(refused.value.errors(include_url=False, include_input=False))  # as answers show it
    assert "****3456: end must be after begin" in text
    assert "****9876" in text
    assert "SECRETCARD" not in text
    assert "bad id" not in text


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


def key(card_id: str) -> str:
    """A stand-in for ManagedCards.key: the planner must go by keys, never by ids, once issued."""
    return f"k-{card_id}"


def apply(ops: list, state: dict[str, ReportedCard]) -> dict[str, ReportedCard]:
    """A model lock: what the operations do to its cards (by key)."""
    state = dict(state)
    for op in ops:
        if op.kind == "issue":
            assert op.key not in state
            assert op.key == key(op.card_id)
            state[op.key] = ReportedCard(lock_card_id=f"new-{op.key}", begin=0, end=1, frozen=False)
            continue
        assert op.card_id is None  # only an issue carries the full id
        card = state[op.key]
        if op.kind == "delete":
            del state[op.key]
        elif op.kind == "modify":
            state[op.key] = ReportedCard(lock_card_id=card.lock_card_id, begin=op.begin, end=op.end, frozen=card.frozen)
        else:
            state[op.key] = ReportedCard(
                lock_card_id=card.lock_card_id, begin=card.begin, end=card.end, frozen=op.kind == "freeze"
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
    reported = {key(cid): reported_card(cid, s) for cid, s in on_lock.items()}
    ours = set(sorted(on_lock)[:managed_share]) | managed_extra
    names = {key(cid): mask(cid) for cid in ours}
    ops = plan_cards(desired, reported, names, key=key)
    assert all(op.masked.startswith("****") for op in ops)
    after = apply(ops, reported)
    for cid, s in desired.items():
        assert (after[key(cid)].begin, after[key(cid)].end, after[key(cid)].frozen) == (*s.window, s.frozen)
    for cid in ours - desired.keys():
        assert key(cid) not in after
    for cid in on_lock.keys() - ours - desired.keys():
        assert after[key(cid)] == reported[key(cid)]  # foreign: untouched
    now_ours = names | {key(cid): mask(cid) for cid in desired}
    assert plan_cards(desired, after, now_ours, key=key) == []  # converged
