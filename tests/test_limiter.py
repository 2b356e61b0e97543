"""The learned concurrency limit (twin.limiter), the gate's slots by precedence (twin.gate), the budget
ledger's arithmetic (twin.ledger) and the confirmation timing (twin.confirmtiming), on injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.confirmtiming import ConfirmTiming
from twin.gate import Priority, Slots
from twin.ledger import BudgetSettings, Ledger, next_reset, period_start
from twin.limiter import AdaptiveLimit, LimitSettings
from twin.store import Store


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(initial: int = 16, floor: int = 2, ceiling: int = 512) -> tuple[AdaptiveLimit, Clock]:
    clock = Clock()
    return AdaptiveLimit(settings=LimitSettings(initial=initial, floor=floor, ceiling=ceiling), clock=clock), clock


def test_slow_start_doubles_a_round_trip_up_to_the_ceiling() -> None:
    limit, clock = limiter(initial=16, ceiling=100)
    for _ in range(16):  # one round trip: every call of the limit succeeds while it is in use
        limit.succeeded(latency=0.2, in_flight=16, started=clock())
    assert limit.limit == 32
    for _ in range(200):
        limit.succeeded(latency=0.2, in_flight=limit.limit, started=clock())
    assert limit.limit == 100


def test_a_quiet_bridge_does_not_inflate_its_limit() -> None:
    limit, clock = limiter(initial=16)
    for _ in range(1000):
        limit.succeeded(latency=0.2, in_flight=3, started=clock())  # app-limited: 3 of 16 in use
    assert limit.limit == 16


def test_push_back_shrinks_once_per_congestion_and_holds() -> None:
    limit, clock = limiter(initial=64)
    started = clock()
    clock.now += 0.01
    limit.overloaded(started=started, in_flight=64)
    assert limit.limit == 48  # 0.75 of 64 (less than 0.9 of the 63 others in flight)
    for _ in range(30):  # the calls that were under way when it shrank are the same congestion
        limit.overloaded(started=started, in_flight=40)
    assert limit.limit == 48
    for _ in range(100):  # held a while after a decrease: no increase
        limit.succeeded(latency=0.2, in_flight=48, started=clock())
    assert limit.limit == 48
    clock.now += 1.0
    limit.overloaded(started=clock.now - 0.1, in_flight=11)  # a rate limit: what it took just then
    assert limit.limit == 9  # 0.9 of the other 10 in flight, not 0.75 of 48
    clock.now += 0.1
    limit.overloaded(started=clock.now, in_flight=1)
    assert limit.limit == 2  # the floor


def test_a_wall_met_again_is_held_just_under_it() -> None:
    limit, clock = limiter(initial=40)
    clock.now += 1
    limit.value = 84.0  # a slow start ran past the vendor's cap of 64
    limit.overloaded(started=clock.now - 0.5, in_flight=84)  # a first refusal: a quarter down
    assert limit.limit == 63
    clock.now += 11  # past the hold; the limit crept on to the cap
    limit.value = 65.0
    limit.overloaded(started=clock.now - 0.1, in_flight=65)  # the same wall: just under it
    assert limit.limit == 60  # 0.95 of the 64 others in flight, not 0.75 of 65
    clock.now += 11
    limit.value = 64.0
    limit.overloaded(started=clock.now - 0.1, in_flight=64)
    assert limit.limit == 59
    clock.now += 11
    limit.overloaded(started=clock.now - 0.1, in_flight=30)  # a different wall: a quarter down again
    assert limit.limit == 26  # 0.9 of the 29 others, less than 0.75 of 59


def test_additive_increase_after_push_back() -> None:
    limit, clock = limiter(initial=40)
    clock.now += 1
    limit.overloaded(started=clock.now - 0.5, in_flight=41)  # 40 -> 30
    clock.now += 11  # past the hold
    for _ in range(32):  # a round trip of the limit (each success adds 1/limit)
        limit.succeeded(latency=0.2, in_flight=30, started=clock())
    assert limit.limit == 30 + 1


def test_past_a_refusal_the_limit_grows_only_while_it_is_in_use() -> None:
    limit, clock = limiter(initial=8)
    clock.now += 1
    limit.overloaded(started=clock.now - 0.5, in_flight=8)  # a cap of 7 met: 0.9 of the 7 others
    assert limit.limit == 6
    clock.now += 11  # past the hold
    for _ in range(200):  # a storm's tail: 5 of the 6 slots taken, the vendor never met again
        limit.succeeded(latency=0.05, in_flight=5, started=clock())
    assert limit.limit == 6
    for _ in range(7):  # every slot taken: one more a round trip
        limit.succeeded(latency=0.05, in_flight=6, started=clock())
    assert limit.limit == 7


def test_rising_latency_shrinks_before_any_429() -> None:
    limit, clock = limiter(initial=100)
    for _ in range(50):
        limit.succeeded(latency=0.2, in_flight=100, started=clock())
    before = limit.limit
    for _ in range(60):  # the vendor queues our calls: 0.2 s -> 0.6 s
        clock.now += 0.01
        limit.succeeded(latency=0.6, in_flight=100, started=clock())
    assert limit.limit < before * 0.95


def test_a_busy_event_loop_is_no_latency_signal() -> None:
    limit, clock = limiter(initial=16)
    for i in range(400):  # a zero-latency vendor measured at 1-30 ms by a loaded process
        limit.succeeded(latency=0.001 + (i % 30) / 1000, in_flight=limit.limit, started=clock())
    assert limit.limit >= 400


@pytest.mark.anyio
async def test_slots_go_by_precedence_and_follow_the_capacity() -> None:
    capacity = 1
    slots = Slots(lambda: capacity)
    await slots.acquire(Priority.COMMAND)
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await slots.acquire(priority)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "read", Priority.READ)
        tg.start_soon(take, "command", Priority.COMMAND)
        tg.start_soon(take, "confirm", Priority.CONFIRM)
        await anyio.wait_all_tasks_blocked()
        assert slots.waiting() == 3
        slots.release()  # the one slot goes to the confirmation read, though it came last
        await anyio.wait_all_tasks_blocked()
        assert order == ["confirm"]
        capacity = 3  # the limit grew: the next release hands out all that fit
        slots.release()
        await anyio.wait_all_tasks_blocked()
        assert order == ["confirm", "command", "read"]
    assert slots.in_use == 2


@pytest.mark.anyio
async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = Slots(lambda: 1)
    await slots.acquire()
    with anyio.move_on_after(0.01):
        await slots.acquire()
    assert slots.waiting() == 0
    slots.release()
    assert slots.in_use == 0


def test_periods_are_utc_hours_days_and_months() -> None:
    at = datetime(2026, 2, 14, 13, 45, tzinfo=UTC).timestamp()
    assert period_start(at, "hour") == datetime(2026, 2, 14, 13, tzinfo=UTC).timestamp()
    day = period_start(at, "day")
    assert next_reset(day, "day") == datetime(2026, 2, 15, tzinfo=UTC).timestamp()
    month = period_start(at, "month")
    assert next_reset(month, "month") == datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def test_the_ledger_keeps_a_reserve_for_commands_and_paces_reads(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 2, 14, 12, tzinfo=UTC).timestamp())
    ledger = Ledger(vendor="t", budget=BudgetSettings(calls=100, per="day", reserve=0.1), clock=clock)
    assert ledger.read_wait() == 0.0
    ledger.read_started()
    # 100 left, 10 kept for commands, 12 h to the reset: one read every 12 h / 90
    assert ledger.read_wait() == pytest.approx(12 * 3600 / 90)
    for _ in range(90):
        ledger.spend()
    with pytest.raises(VendorError) as refused:
        ledger.check(device=None, read=True)
    assert refused.value.info.code == ErrorCode.QUOTA_EXHAUSTED
    ledger.check(device=None, read=False)  # a command may spend the reserve
    for _ in range(10):
        ledger.spend()
    with pytest.raises(VendorError) as spent:
        ledger.check(device=None, read=False)
    assert spent.value.info.retry_after == pytest.approx(12 * 3600, abs=1)
    assert not spent.value.info.retryable
    clock.now += 12 * 3600  # the next day
    ledger.check(device=None, read=True)
    assert ledger.remaining() == 100


def test_a_vendor_quota_is_probed_once_after_a_growing_pause() -> None:
    clock = Clock()
    ledger = Ledger(vendor="t", clock=clock)
    assert ledger.vendor_exhausted(device=None, retry_after=None) == 60.0
    with pytest.raises(VendorError):
        ledger.check(device=None, read=False)
    clock.now += 61
    ledger.check(device=None, read=False)  # the probe
    with pytest.raises(VendorError):  # the others wait for its answer
        ledger.check(device=None, read=False)
    assert ledger.vendor_exhausted(device=None, retry_after=None) == 120.0  # still spent: twice the pause
    clock.now += 121
    ledger.check(device=None, read=False)
    ledger.vendor_answered(device=None)  # it is back
    ledger.check(device=None, read=False)
    ledger.check(device=None, read=True)


def test_one_vehicles_quota_stops_that_vehicle_only() -> None:
    ledger = Ledger(vendor="t", clock=Clock())
    ledger.vendor_exhausted(device="car-1", retry_after=None)
    with pytest.raises(VendorError):
        ledger.check(device="car-1", read=False)
    ledger.check(device="car-2", read=False)
    assert ledger.vendor_exhausted_devices() == 1


def test_confirmation_timing_finds_an_instant_lock_and_a_slow_bolt(tmp_path: Path) -> None:
    timing = ConfirmTiming(prior=1.0, longest=10.0)
    for _ in range(14):  # the lock is done at once: each first read confirms
        wait = timing.first_wait("d1")
        timing.confirmed("d1", at=wait, misses=[], by_read=True, waited=wait)
    assert timing.first_wait("d1") < 0.005

    timing = ConfirmTiming(prior=0.3, longest=10.0)
    bolt = 0.8  # a read that starts before 0.8 s after the acknowledgement misses
    reads = 0
    for _ in range(40):
        wait = first = timing.first_wait("d2")
        misses: list[float] = []
        step = None
        while wait < bolt:
            reads += 1
            misses.append(wait)
            step = timing.step("d2", step)
            wait += step
        reads += 1
        timing.confirmed("d2", at=wait, misses=misses, by_read=True, waited=first)
    assert bolt <= timing.first_wait("d2") <= bolt * 1.15
    assert reads / 40 < 1.6  # the misses of the first commands and a probe now and then


def test_confirmation_timing_is_kept_in_the_store(tmp_path: Path) -> None:
    store = Store(path=tmp_path / "s.sqlite")
    store.open()
    try:
        timing = ConfirmTiming(prior=1.0, longest=10.0, store=store)
        timing.load()
        for _ in range(5):
            wait = timing.first_wait("d1")
            timing.confirmed("d1", at=wait, misses=[], by_read=True, waited=wait)
        timing.persist()
        store.flush()
        again = ConfirmTiming(prior=1.0, longest=10.0, store=store)
        again.load()
        assert again.first_wait("d1") <= 0.25  # halved four times (a fifth, a probe, not yet answered)
    finally:
        store.close()
