"""When a command expires, from what its sender said and what its delivery tells (twin.intake.expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from contracts.errors import ErrorCode
from twin.intake import Rejected, expiry

NOW = 1_800_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds, UTC)


def rule(**kw: object) -> float:
    args: dict[str, object] = {"expires_in": None, "issued_at": None, "default": 30, "maximum": 300, "now": NOW}
    args.update(kw)
    return expiry(**args)  # type: ignore[arg-type]


def refused(**kw: object) -> Rejected:
    with pytest.raises(Rejected) as caught:
        rule(**kw)
    return caught.value


def test_live_command_counts_from_its_arrival() -> None:
    assert rule() == NOW + 30
    assert rule(expires_in=10) == NOW + 10
    assert rule(expires_in=10_000) == NOW + 300  # the vendor's maximum


def test_issued_at_counts_from_the_sender() -> None:
    assert rule(expires_in=10, issued_at=at(-4)) == NOW + 6
    assert refused(expires_in=10, issued_at=at(-10)).error.code == ErrorCode.EXPIRED


def test_a_clock_ahead_never_lengthens_a_command() -> None:
    """issued_at 29 s ahead (within the allowed skew) and expires_in 1: it lives 1 s, not 30."""
    assert rule(expires_in=1, issued_at=at(29)) == NOW + 1
    assert refused(expires_in=1, issued_at=at(31)).error.code == ErrorCode.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "issued",
    [
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        datetime(1, 1, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    ],
)
def test_issued_at_at_the_edges_of_the_calendar_is_refused(issued: datetime) -> None:
    assert refused(expires_in=10, issued_at=issued).error.code in (ErrorCode.INVALID_PAYLOAD, ErrorCode.EXPIRED)


def test_unknown_age_from_the_session_backlog() -> None:
    # away 2 s: a plain command queued meanwhile runs, with what is left of its expiry
    assert rule(queued_since=NOW - 2) == NOW + 28
    # away longer than its expiry: refused, and the message says why
    rejected = refused(queued_since=NOW - 20, expires_in=10)
    assert rejected.error.code == ErrorCode.EXPIRED
    assert "age is unknown" in rejected.error.message and "bridge was away" in rejected.error.message
    # never recorded live: it may have waited any time
    assert refused(queued_since=float("-inf")).error.code == ErrorCode.EXPIRED
    # a sender's issued_at is better knowledge than the backlog's bound
    assert rule(queued_since=NOW - 20, expires_in=10, issued_at=at(-1)) == NOW + 9


def test_message_expiry_interval_shortens_the_lifetime() -> None:
    assert rule(expires_in=30, expiry_left=5) == NOW + 5
    assert rule(expires_in=3, expiry_left=5) == NOW + 3
    assert refused(expiry_left=0).error.code == ErrorCode.EXPIRED
