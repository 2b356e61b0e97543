"""Configuration of the Tuya bridge: the ``[vendors.tuya]`` table plus ``LOCKTWIN_TUYA_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridges.tuya.client import DEFAULT_TIMEOUT, DEFAULT_TOKEN_REFRESH_MARGIN

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_POLL_INTERVAL", "LockPolarity", "TuyaSettings"]

DEFAULT_BASE_URL = "https://openapi.tuyaeu.com"
DEFAULT_POLL_INTERVAL = 60.0

#: how a lock's firmware reports ``lock_motor_state``
LockPolarity = Literal["true_is_locked", "true_is_unlocked"]


class TuyaSettings(BaseSettings):
    """``client_secret`` only from the environment (``LOCKTWIN_TUYA_CLIENT_SECRET``) or a file."""

    model_config = SettingsConfigDict(env_prefix="LOCKTWIN_TUYA_", extra="forbid", frozen=True)

    base_url: str = Field(default=DEFAULT_BASE_URL, description="the data center, or a simulator")
    client_id: str = Field(min_length=1, description="the cloud project's Access ID")
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    project_id: str | None = Field(default=None, description="cloud project id; needed by the card API")
    devices: list[str] = Field(default_factory=list)
    default_lock_polarity: LockPolarity = "true_is_locked"
    lock_polarity: dict[str, LockPolarity] = Field(default_factory=dict, description="per device")
    poll_interval: float | None = Field(default=DEFAULT_POLL_INTERVAL, gt=0)
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)
    token_refresh_margin: float = Field(default=DEFAULT_TOKEN_REFRESH_MARGIN, ge=0)
    send_nonce: bool = False
    lang: str = "en"

    @model_validator(mode="after")
    def _one_secret(self) -> TuyaSettings:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("set exactly one of client_secret (environment) and client_secret_file")
        unknown = set(self.lock_polarity) - set(self.devices)
        if unknown:
            raise ValueError(f"lock_polarity names devices that are not configured: {sorted(unknown)}")
        return self

    def secret(self) -> SecretStr:
        if self.client_secret is not None:
            return self.client_secret
        assert self.client_secret_file is not None
        return SecretStr(self.client_secret_file.read_text().strip())

    def locked_when_true(self, device_id: str) -> bool:
        return self.lock_polarity.get(device_id, self.default_lock_polarity) == "true_is_locked"
