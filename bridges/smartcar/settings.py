"""Configuration of the Smartcar bridge: ``[vendors.smartcar]`` plus ``LOCKTWIN_SMARTCAR_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_AUTH_URL",
    "DEFAULT_CONNECT_URL",
    "DEFAULT_SCOPE",
    "SmartcarSettings",
]

DEFAULT_API_URL = "https://api.smartcar.com/v2.0"
DEFAULT_AUTH_URL = "https://auth.smartcar.com/oauth/token"
DEFAULT_CONNECT_URL = "https://connect.smartcar.com/oauth/authorize"
DEFAULT_SCOPE = (
    "read_vehicle_info",
    "read_security",
    "control_security",
    "read_battery",
    "read_location",
    "read_odometer",
)


class SmartcarSettings(BaseSettings):
    """Everything the adapter and ``locktwin smartcar connect`` need; secrets stay ``SecretStr``."""

    model_config = SettingsConfigDict(env_prefix="LOCKTWIN_SMARTCAR_", extra="forbid", frozen=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    redirect_uri: str = "http://127.0.0.1:8000/smartcar/callback"
    #: the API root including the version; only this differs between the real cloud and a simulator
    base_url: str = DEFAULT_API_URL
    auth_url: str = DEFAULT_AUTH_URL
    connect_url: str = DEFAULT_CONNECT_URL
    scope: tuple[str, ...] = DEFAULT_SCOPE
    mode: str = Field(default="live", pattern=r"^(live|test|simulated)$")
    #: a Connect code exchanged once at start (headless setups, the demo); ``connect`` is the usual way
    auth_code: SecretStr | None = None
    #: token store folder for the CLI; the bridge uses the runtime's data dir when this is unset
    data_dir: Path | None = None
    unit_system: str = Field(default="metric", pattern=r"^(metric|imperial)$")
    request_timeout: float = Field(default=30.0, gt=0)
    page_size: int = Field(default=50, ge=1, le=50)
    #: refresh the access token this many seconds before it expires
    refresh_margin: float = Field(default=300.0, ge=0)
    #: seconds between status polls of one vehicle (DeviceInfo.poll_interval); None: never poll
    poll_interval: float | None = Field(default=300.0, gt=0)
    #: per-vehicle telemetry budget: at most one full read in this many seconds
    telemetry_min_interval: float = Field(default=240.0, ge=0)
    #: while confirming a command, ``/security`` may be read this often
    confirm_min_interval: float = Field(default=1.0, ge=0)
    #: how long after an accepted command the faster confirmation reads are allowed
    confirm_window: float = Field(default=120.0, ge=0)
