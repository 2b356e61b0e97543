"""twin.http: Retry-After in both of its forms, and the single-flight token refresher (concurrency,
refresh ahead, overlap, shared failures, refused tokens, a token kept in a store) on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import Token, TokenRefresher, parse_retry_after
from twin.testing_fakes import FakeClock

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("1.5", 1.5),  # some gateways send fractions
        (" 7 ", 7.0),
        ("-3", 0.0),  # never negative
        ("Sun, 06 Dec 2026 12:00:30 GMT", 30.0),  # an HTTP-date
        ("Sunday, 06-Dec-26 12:01:00 GMT", 60.0),  # its obsolete RFC 850 form
        ("Sun, 06 Dec 2026 11:59:00 GMT", 0.0),  # already past
        (None, None),
        ("", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
    ],
)
async def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_token_lasting_is_refreshed_ahead_but_not_in_its_first_half() -> None:
    token = Token.lasting("t", lifetime=100.0, ahead=30.0, since=1000.0)
    assert (token.expires_at, token.refresh_at) == (1100.0, 1070.0)
    short = Token.lasting("t", lifetime=10.0, ahead=30.0, since=1000.0)
    assert (short.expires_at, short.refresh_at) == (1010.0, 1005.0)
    assert short.fresh(1004.9) and not short.fresh(1005.0)
    assert short.valid(1009.9) and not short.valid(1010.0)


class Vendor:
    """A token endpoint the test holds (``gate``) and makes fail (``failures``)."""

    def __init__(self, clock: FakeClock, *, lifetime: float = 100.0, ahead: float = 30.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.ahead = ahead
        self.fetched: list[Token[str] | None] = []
        self.gate: anyio.Event | None = None
        self.failures = 0

    async def fetch(self, current: Token[str] | None) -> Token[str]:
        self.fetched.append(current)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise VendorError(ErrorCode.AUTH_FAILED, "refused", vendor_code="invalid_client")
        value = f"token-{len(self.fetched)}"
        return Token.lasting(value, lifetime=self.lifetime, ahead=self.ahead, since=self.clock())


def refresher(vendor: Vendor, **options: object) -> TokenRefresher[str]:
    return TokenRefresher(fetch=vendor.fetch, vendor="test", clock=vendor.clock, **options)  # type: ignore[arg-type]


async def test_concurrent_callers_share_one_fetch() -> None:
    vendor = Vendor(FakeClock())
    tokens = refresher(vendor)
    vendor.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def one() -> None:
            results.append(await tokens.get())

        for _ in range(20):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()  # all 20 wait: one in the fetch, 19 for it
        assert len(vendor.fetched) == 1
        assert tokens.refreshing
        vendor.gate.set()
    assert results == ["token-1"] * 20
    assert not tokens.refreshing


async def test_refreshed_ahead_of_expiry_on_its_clock() -> None:
    clock = FakeClock()
    vendor = Vendor(clock, lifetime=100.0, ahead=30.0)
    tokens = refresher(vendor)
    assert await tokens.get() == "token-1"
    clock.advance(69.9)
    assert await tokens.get() == "token-1"  # before the refresh point: no call to the vendor
    clock.advance(0.2)
    assert await tokens.get() == "token-2"  # 30 s before it runs out: replaced first
    assert vendor.fetched[1] is not None and vendor.fetched[1].value == "token-1"  # the refresh sees the old one
    assert len(vendor.fetched) == 2


async def test_overlap_lets_others_use_the_old_token_during_a_refresh() -> None:
    clock = FakeClock()
    vendor = Vendor(clock)
    tokens = refresher(vendor, overlap=True)
    await tokens.get()
    clock.advance(80.0)  # past the refresh point, still valid
    vendor.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tokens.get)
        await anyio.wait_all_tasks_blocked()  # the refresh is held in the fetch
        assert tokens.refreshing
        assert await tokens.get() == "token-1"  # not blocked: the vendor still takes it
        vendor.gate.set()
    assert await tokens.get() == "token-2"
    clock.advance(100.0)  # expired: nobody may use it, even with a refresh under way
    vendor.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def one() -> None:
            results.append(await tokens.get())

        tg.start_soon(one)
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert results == []  # both wait for the new one
        vendor.gate.set()
    assert results == ["token-3", "token-3"]


async def test_without_overlap_callers_wait_for_the_refresh() -> None:
    clock = FakeClock()
    vendor = Vendor(clock)
    tokens = refresher(vendor)
    await tokens.get()
    clock.advance(80.0)
    vendor.gate = anyio.Event()
    results: list[str] = []

    async def one() -> None:
        results.append(await tokens.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert results == []  # the vendor ends the old token when it issues a new one (Tuya)
        vendor.gate.set()
    assert results == ["token-2", "token-2"]
    assert len(vendor.fetched) == 2


async def test_a_failed_fetch_is_shared_by_its_waiters_then_retried() -> None:
    vendor = Vendor(FakeClock())
    vendor.failures = 1
    tokens = refresher(vendor)
    vendor.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        errors: list[VendorError] = []

        async def one() -> None:
            try:
                await tokens.get()
            except VendorError as exc:
                errors.append(exc)

        for _ in range(10):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        vendor.gate.set()
    assert len(vendor.fetched) == 1  # no stampede on a vendor that just refused
    assert [e.info.code for e in errors] == [ErrorCode.AUTH_FAILED] * 10
    assert all(e.info.vendor_code == "invalid_client" for e in errors)
    assert len({id(e) for e in errors}) == 10  # one exception each (raised in ten tasks)
    vendor.gate = None
    assert await tokens.get() == "token-2"  # a later call asks again


async def test_a_refused_token_is_replaced_once_for_everyone_who_saw_it() -> None:
    vendor = Vendor(FakeClock())
    tokens = refresher(vendor)
    first = await tokens.get()
    vendor.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def refused() -> None:
            results.append(await tokens.get(refused=first))

        for _ in range(5):
            tg.start_soon(refused)
        await anyio.wait_all_tasks_blocked()
        vendor.gate.set()
    assert results == ["token-2"] * 5
    assert len(vendor.fetched) == 2
    assert vendor.fetched[1] is not None and vendor.fetched[1].value == first  # its refresh token is kept
    assert await tokens.get() == "token-2"  # nobody is handed the refused one again
    assert await tokens.get(refused=first) == "token-2"  # a late caller that saw it refused


async def test_a_token_kept_in_a_store_is_read_on_every_call() -> None:
    clock = FakeClock()
    stored: dict[str, Token[str]] = {}

    async def fetch(current: Token[str] | None) -> Token[str]:
        token = Token.lasting(f"stored-{len(stored) + 1}", lifetime=100.0, ahead=10.0, since=clock())
        stored["account"] = token  # saved by the fetch, durably, before anyone uses it
        return token

    def current() -> Token[str] | None:
        if "gone" in stored:
            raise VendorError(ErrorCode.AUTH_FAILED, "no linked account")
        return stored.get("account")

    tokens = TokenRefresher(fetch=fetch, vendor="test", current=current, clock=clock)
    assert await tokens.get() == "stored-1"
    stored["account"] = Token.lasting("linked-elsewhere", lifetime=100.0, ahead=10.0, since=clock())
    assert await tokens.get() == "linked-elsewhere"  # another process wrote the store
    assert await tokens.get(refused="linked-elsewhere") == "stored-2"
    stored["gone"] = Token("", expires_at=0.0, refresh_at=0.0)
    with pytest.raises(VendorError, match="no linked account"):
        await tokens.get()
