"""Settings (strict, secrets hidden) and the package's public surface."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import bridges.tuya
import bridges.tuya.simulator
from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.settings import TuyaSettings
from twin.config import load_vendor_settings
from twin.registry import load_adapter_class


def test_all_pinned() -> None:
    assert bridges.tuya.__all__ == [
        "CardOperation",
        "CardSpec",
        "TuyaAdapter",
        "TuyaClient",
        "TuyaSettings",
        "plan_cards",
    ]
    assert bridges.tuya.simulator.__all__ == [
        "DEFAULT_CLIENT_ID",
        "DEFAULT_CLIENT_SECRET",
        "DEFAULT_PROJECT_ID",
        "TuyaSimulator",
        "serve_simulator",
    ]


def test_registry_loads_tuya() -> None:
    assert load_adapter_class("tuya") is TuyaAdapter
    assert TuyaAdapter.settings_model is TuyaSettings


def test_settings_from_table_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKTWIN_TUYA_CLIENT_SECRET", "from-env-secret")
    monkeypatch.setenv("LOCKTWIN_TUYA_DEVICES", '["lock-a", "lock-b"]')
    settings = load_vendor_settings(
        TuyaSettings, {"client_id": "cid", "devices": ["ignored"], "lock_polarity": {"lock-b": "true_is_unlocked"}}
    )
    assert isinstance(settings, TuyaSettings)
    assert settings.devices == ["lock-a", "lock-b"]
    assert settings.secret().get_secret_value() == "from-env-secret"
    assert settings.locked_when_true("lock-a") is True
    assert settings.locked_when_true("lock-b") is False
    assert "from-env-secret" not in repr(settings)
    assert "from-env-secret" not in str(settings.model_dump())


def test_settings_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret\n")
    settings = TuyaSettings(client_id="cid", client_secret_file=secret_file)
    assert settings.secret().get_secret_value() == "file-secret"


@pytest.mark.parametrize(
    "values",
    [
        {"client_id": "cid"},  # no secret
        {"client_id": "cid", "client_secret": "s", "unknown_key": 1},
        {"client_id": "cid", "client_secret": "s", "devices": ["a"], "lock_polarity": {"b": "true_is_locked"}},
        {"client_id": "cid", "client_secret": "s", "lock_polarity": {"a": "sideways"}, "devices": ["a"]},
        {"client_id": "cid", "client_secret": "s", "poll_interval": 0},
    ],
)
def test_settings_invalid_rejected(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TuyaSettings(**values)  # type: ignore[arg-type]
