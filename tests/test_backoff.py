"""VendorBackoff: when background reads pause, for how long, and what ends it (a clock of our own)."""

from __future__ import annotations

import pytest

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.backoff import FAILURES_BEFORE_PAUSE, VendorBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(backoff: VendorBackoff, clock: Clock, times: int = 1) -> float:
    pause = 0.0
    for _ in range(times):
        pause = backoff.failed(started=clock.now)
    return pause


def test_a_few_failures_do_not_pause(clock: Clock) -> None:
    backoff = VendorBackoff(clock=clock)
    assert fail(backoff, clock, FAILURES_BEFORE_PAUSE - 1) == 0
    backoff.succeeded()
    assert fail(backoff, clock, FAILURES_BEFORE_PAUSE - 1) == 0  # the count starts again


def test_pauses_double_up_to_the_longest(clock: Clock) -> None:
    backoff = VendorBackoff(first=1.0, longest=8.0, clock=clock)
    pauses = [fail(backoff, clock, FAILURES_BEFORE_PAUSE)]
    for _ in range(6):
        clock.now += pauses[-1]  # the pause ran out; the next read fails too
        assert backoff.remaining() == 0
        pauses.append(fail(backoff, clock))
    expected = [1, 2, 4, 8, 8, 8, 8]
    assert all(0.75 * e <= p <= e for p, e in zip(pauses, expected, strict=True)), pauses


def test_failures_during_a_pause_and_of_older_calls_do_not_escalate(clock: Clock) -> None:
    backoff = VendorBackoff(first=1.0, clock=clock)
    before = clock.now
    clock.now += 0.01
    first = fail(backoff, clock, FAILURES_BEFORE_PAUSE)
    assert fail(backoff, clock, 10) == first  # paused already: one observation, not ten
    clock.now += first
    assert backoff.failed(started=before) == 0  # a read that was under way before the pause
    assert backoff.remaining() == 0


def test_a_success_ends_the_pause(clock: Clock) -> None:
    backoff = VendorBackoff(clock=clock)
    assert fail(backoff, clock, FAILURES_BEFORE_PAUSE) > 0
    backoff.succeeded()
    assert backoff.remaining() == 0
    assert fail(backoff, clock, FAILURES_BEFORE_PAUSE) <= 1.0  # and starts from the first length again


def test_retry_after_is_obeyed_at_once_and_outlasts_a_success(clock: Clock) -> None:
    backoff = VendorBackoff(clock=clock)
    assert backoff.failed(started=clock.now, retry_after=7.0) == 7.0
    backoff.succeeded()
    clock.now += 6.0
    assert backoff.remaining() == pytest.approx(1.0)
    clock.now += 1.0
    assert backoff.remaining() == 0


@pytest.mark.parametrize(
    ("code", "vendor_wide"),
    [
        (ErrorCode.VENDOR_UNAVAILABLE, True),
        (ErrorCode.RATE_LIMITED, True),
        (ErrorCode.DEVICE_OFFLINE, False),
        (ErrorCode.DEVICE_TIMEOUT, False),
        (ErrorCode.VEHICLE_ASLEEP, False),
    ],
)
def test_the_code_decides_what_is_vendor_wide_unless_the_adapter_says(code: ErrorCode, vendor_wide: bool) -> None:
    assert VendorError(code, "x").vendor_wide is vendor_wide
    assert VendorError(code, "x", vendor_wide=not vendor_wide).vendor_wide is not vendor_wide
