"""Tokens: code exchange, refresh before expiry, rotation, one refresh per user, refusal, crash safety."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.cli import link_account
from bridges.smartcar.simulator import SmartcarSimulator
from bridges.smartcar.tokens import TokenStore
from contracts.errors import ErrorCode
from contracts.messages import EventType
from twin.adapter import VendorError
from twin.asgi import ServedApp
from twin.testing_fakes import RecordingSink, command_context

from .conftest import CLIENT_ID, CLIENT_SECRET, make_settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


def token_calls(sim: SmartcarSimulator) -> list[dict[str, str]]:
    return [c.body for c in sim.calls if c.path == "/oauth/token"]


async def test_tokens_exchange_stores_account(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    (account,) = adapter.store.accounts()
    assert account.user_id == sim.fleet.users[0]
    assert not account.refused
    assert account.access_token not in repr(account) and account.refresh_token not in repr(account)
    assert token_calls(sim)[0] == {"grant_type": "authorization_code", "redirect_uri": make_settings("x").redirect_uri}
    assert (adapter.store.path.stat().st_mode & 0o777) == 0o600


async def test_tokens_refreshed_before_expiry(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, served: ServedApp
) -> None:
    user_id = sim.fleet.users[0]
    before = adapter.store.account(user_id)
    assert before is not None
    # 200 s left is inside the 300 s margin: the next call refreshes first
    adapter.store.db.execute("UPDATE accounts SET access_expires_at = unixepoch() + 200")
    await adapter.api.security(user_id, sim.fleet.ids[0])
    after = adapter.store.account(user_id)
    assert after is not None
    assert after.refresh_token != before.refresh_token
    assert after.access_token != before.access_token
    assert token_calls(sim)[-1] == {"grant_type": "refresh_token"}
    # the used refresh token is dead: rotation
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"{served.url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": before.refresh_token},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_grant"


async def test_tokens_one_refresh_at_a_time(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    user_id = sim.fleet.users[0]
    adapter.store.db.execute("UPDATE accounts SET access_expires_at = 0")
    async with anyio.create_task_group() as tg:
        for vehicle_id in sim.fleet.ids * 3:
            tg.start_soon(adapter.api.security, user_id, vehicle_id)
    assert sim.oauth.refresh_count == 1
    assert adapter.tokens.refreshes == 1


async def test_tokens_early_rejection_refreshes_once(adapter: SmartcarAdapter, sim: SmartcarSimulator) -> None:
    sim.oauth.expire_access_tokens()
    patch = await adapter.read_status(sim.fleet.ids[0])  # a refused read spent no budget
    assert patch.values["online"] is True
    assert sim.oauth.refresh_count == 1
    assert [c.status for c in sim.calls if c.path.endswith("/security")][:2] == [401, 200]


async def test_tokens_refused_device_offline_with_auth_event(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, sink: RecordingSink
) -> None:
    user_id = sim.fleet.users[0]
    sim.oauth.revoke(user_id)
    with pytest.raises(VendorError) as caught:
        await adapter.read_status(sim.fleet.ids[0])
    assert caught.value.info.code is ErrorCode.AUTH_FAILED
    assert "locktwin smartcar connect" in caught.value.info.message
    assert {(d, p.values["online"], s) for d, p, s in sink.reports} == {(v, False, "auth") for v in sim.fleet.ids}
    assert {(d, t) for d, t, _ in sink.events} == {(v, EventType.AUTH) for v in sim.fleet.ids}
    assert all(
        e == {"code": "AUTH_FAILED", "message": "reconnect with locktwin smartcar connect"} for *_, e in sink.events
    )
    # refused until reconnected: no more calls, devices still listed
    calls = len(sim.calls)
    with pytest.raises(VendorError):
        await adapter.lock(sim.fleet.ids[1], locked=False, ctx=command_context(sim.fleet.ids[1]))
    assert len(sim.calls) == calls
    assert {d.id for d in await adapter.list_devices()} == set(sim.fleet.ids)
    assert len(sim.calls) == calls


async def test_tokens_survive_kill_after_refresh(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, served: ServedApp, sink: RecordingSink
) -> None:
    user_id = sim.fleet.users[0]
    before = adapter.store.account(user_id)
    assert before is not None
    await adapter.stop()
    process = await anyio.run_process(
        [sys.executable, "-m", "bridges.smartcar.tests.kill_after_refresh", str(sink.data_dir), served.url, user_id],
        cwd=ROOT,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL
    assert sim.oauth.refresh_count == 1
    # a new process on the same store: the stored tokens work, the old refresh token does not
    store = TokenStore(directory=sink.data_dir)
    store.open()
    stored = store.account(user_id)
    store.close()
    assert stored is not None and stored.refresh_token != before.refresh_token
    restarted = SmartcarAdapter(settings=make_settings(served.url))
    await restarted.start(sink)
    try:
        await restarted.list_devices()
        assert (await restarted.read_status(sim.fleet.ids[0])).values["online"] is True
        restarted.store.db.execute("UPDATE accounts SET access_expires_at = 0")
        await restarted.api.security(user_id, sim.fleet.ids[1])
    finally:
        await restarted.stop()
    assert sim.oauth.refresh_count == 2
    assert [c.status for c in sim.calls if c.path == "/oauth/token"][-1] == 200


async def test_tokens_reconnect_recovers_without_restart(
    adapter: SmartcarAdapter, sim: SmartcarSimulator, sink: RecordingSink, served: ServedApp
) -> None:
    user_id = sim.fleet.users[0]
    sim.oauth.revoke(user_id)
    with pytest.raises(VendorError):
        await adapter.read_status(sim.fleet.ids[0])
    # the operator runs `locktwin smartcar connect` (here: the same code path) while the bridge runs
    await link_account(make_settings(served.url), data_dir=sink.data_dir, code=sim.issue_code())
    patch = await adapter.read_status(sim.fleet.ids[0])  # a refused read spent no budget
    assert patch.values["online"] is True
