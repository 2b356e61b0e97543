"""The public surface of the Smartcar bridge, its registry line and its settings' manners."""

from __future__ import annotations

import logging

import pytest

import bridges.smartcar
import bridges.smartcar.simulator
from bridges.smartcar.adapter import SmartcarAdapter
from bridges.smartcar.settings import SmartcarSettings
from bridges.smartcar.simulator import SmartcarSimulator
from twin.adapter import VendorError
from twin.registry import load_adapter_class
from twin.testing_fakes import RecordingSink

from .conftest import CLIENT_SECRET, running_adapter

pytestmark = pytest.mark.anyio


def test_all_pinned() -> None:
    assert bridges.smartcar.__all__ == ["SmartcarAdapter", "SmartcarSettings"]
    assert "SmartcarSimulator" in bridges.smartcar.simulator.__all__
    assert "serve_simulator" in bridges.smartcar.simulator.__all__


def test_registry_loads_adapter() -> None:
    assert load_adapter_class("smartcar") is SmartcarAdapter
    assert SmartcarAdapter.vendor == "smartcar"
    assert SmartcarAdapter.settings_model is SmartcarSettings


def test_settings_env_prefix_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKTWIN_SMARTCAR_CLIENT_ID", "from-env")
    monkeypatch.setenv("LOCKTWIN_SMARTCAR_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("LOCKTWIN_SMARTCAR_TELEMETRY_MIN_INTERVAL", "600")
    settings = SmartcarSettings()
    assert settings.client_id == "from-env"
    assert settings.telemetry_min_interval == 600
    assert CLIENT_SECRET not in repr(settings) and CLIENT_SECRET not in str(settings.model_dump())
    with pytest.raises(ValueError, match="extra"):
        SmartcarSettings(client_id="x", client_secret="y", unknown_key=1)  # type: ignore[call-arg]


async def test_logs_never_carry_tokens(
    sim: SmartcarSimulator, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_adapter(sim, sink) as adapter:
        adapter.store.db.execute("UPDATE accounts SET access_expires_at = 0")
        await adapter.read_status(sim.fleet.ids[0])
        (account,) = adapter.store.accounts()
        sim.oauth.revoke(account.user_id)
        sim.oauth.expire_access_tokens()
        with pytest.raises(VendorError, match="AUTH_FAILED"):
            await adapter.read_status(sim.fleet.ids[1])
    text = caplog.text
    assert "refreshed the access token" in text
    assert account.access_token not in text and account.refresh_token not in text
    assert CLIENT_SECRET not in text
