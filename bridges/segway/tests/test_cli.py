"""``locktwin segway check|sign`` against the simulator (served from a portal thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyio.from_thread import start_blocking_portal

from bridges.segway import SegwayAdapter
from bridges.segway.simulator import SegwaySimulator
from twin.cli import main as locktwin

from .conftest import CLIENT_ID, DEVICES, SECRET
from .test_push import doc_signature


@pytest.fixture
def sim_url() -> Iterator[tuple[SegwaySimulator, str]]:
    sim = SegwaySimulator(client_id=CLIENT_ID, client_secret=SECRET, devices=DEVICES)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(sim.serve()) as served:
        yield sim, served.url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sim_url: tuple[SegwaySimulator, str]) -> SegwaySimulator:
    sim, url = sim_url
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("LOCKTWIN_SEGWAY_BASE_URL", url)
    monkeypatch.setenv("LOCKTWIN_SEGWAY_DEVICES", f'["{DEVICES[0]}", "{DEVICES[1]}"]')
    return sim


def test_cli_check_reads_each_vehicle(env: SegwaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    env.fleet[DEVICES[1]].go_offline()
    assert locktwin(["segway", "check"]) == 1
    out = capsys.readouterr().out
    assert f"{DEVICES[0]}: lock=LOCKED, online=True" in out
    assert f"{DEVICES[1]}: DEVICE_OFFLINE (15301" in out
    assert "token fetched 1 time(s)" in out
    assert SECRET not in out


def test_cli_check_bad_secret(
    env: SegwaySimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOCKTWIN_SEGWAY_CLIENT_SECRET", "nope")
    assert SegwayAdapter.cli(["check"]) == 1
    assert "AUTH_FAILED (invalid_client" in capsys.readouterr().out


def test_cli_sign_matches_document(env: SegwaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert SegwayAdapter.cli(["sign", "iotCode=1", "code=12", "alertStatus=0"]) == 0
    expected = doc_signature({"iotCode": "1", "code": "12", "alertStatus": "0"}, SECRET)
    assert capsys.readouterr().out.strip() == expected
