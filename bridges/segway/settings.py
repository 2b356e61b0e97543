"""Configuration of the Segway Discovery bridge (``[vendors.segway]`` plus ``LOCKTWIN_SEGWAY_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridges.segway.replay import DEFAULT_PUSH_WINDOW, DEFAULT_REPLAY_CAPACITY
from twin.http_guard import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_EVICT_AFTER,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
)
from twin.tlsfiles import CertificateFiles

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_PUSH_MAX_BODY",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TOKEN_REFRESH_AHEAD",
    "REGION_HOSTS",
    "SegwaySettings",
    "region_base_url",
]

#: API host by the first letter of the platform code (the document's region table).
REGION_HOSTS: dict[str, str] = {
    "A": "https://apac-api.segwaydiscovery.com",
    "E": "https://eu-api.segwaydiscovery.com",
    "U": "https://us-api.segwaydiscovery.com",
    "C": "https://cn-api.segwaydiscovery.com",
}
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
#: refresh this long before ``expires_in`` runs out (capped at half the token's lifetime)
DEFAULT_TOKEN_REFRESH_AHEAD = 120.0
DEFAULT_PUSH_MAX_BODY = 16 * 1024


def region_base_url(platform_code: str) -> str:
    """The API host for a platform code (``A20081`` -> apac)."""
    try:
        return REGION_HOSTS[platform_code[:1].upper()]
    except KeyError:
        raise ValueError(f"platform code must start with one of {', '.join(REGION_HOSTS)}") from None


class SegwaySettings(BaseSettings):
    """Credentials, devices and knobs. Secrets are :class:`SecretStr` and never printed."""

    model_config = SettingsConfigDict(env_prefix="LOCKTWIN_SEGWAY_", extra="forbid", frozen=True)

    #: the platform code (``client_id``); its first letter picks the region
    client_id: str = Field(min_length=1, max_length=64)
    #: from ``LOCKTWIN_SEGWAY_CLIENT_SECRET`` or read from ``client_secret_file`` (never from the TOML file)
    client_secret: SecretStr
    client_secret_file: Path | None = None
    #: overrides the region host (simulator, private endpoints)
    base_url: str | None = None
    #: IoT IMEIs (``iotCode``) of the vehicles this bridge serves
    devices: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]] = Field(default_factory=list)
    poll_interval: float | None = Field(default=DEFAULT_POLL_INTERVAL, gt=0)
    request_timeout: float = Field(default=DEFAULT_REQUEST_TIMEOUT, gt=0)
    #: ``aiohttp`` (the default of every vendor client, ``twin/http.py``): httpx's API over the
    #: ``httpx-aiohttp`` transport (~5x the requests/s here); ``httpx``: httpx's own transport
    http_transport: Literal["httpx", "aiohttp"] = "aiohttp"
    token_refresh_ahead: float = Field(default=DEFAULT_TOKEN_REFRESH_AHEAD, ge=0)
    #: read the position with every status poll (pushes bring it too when push is on)
    poll_location: bool = True
    #: ask the vehicle for a fresh fix on every location read (slower, costs the device a report)
    realtime_location: bool = False
    push_enabled: bool = False
    push_host: str = "127.0.0.1"
    push_port: int = Field(default=0, ge=0, le=65535)
    push_max_body: int = Field(default=DEFAULT_PUSH_MAX_BODY, gt=0)
    #: connections the push intake serves at once (more are answered 503; Segway retries once)
    push_max_concurrency: int = Field(default=100, ge=1)
    #: serve the push intake over HTTPS with this PEM certificate (chain) and key; without them it
    #: is plain HTTP, for a reverse proxy that ends TLS in front of it (README.md)
    push_cert_file: Path | None = None
    push_key_file: Path | None = None
    #: the key's passphrase, from ``LOCKTWIN_SEGWAY_PUSH_KEY_PASSWORD`` or ``push_key_password_file``
    push_key_password: SecretStr | None = None
    push_key_password_file: Path | None = None
    #: a push dated more than this before it arrives changes nothing (answered 200); copies of a
    #: stored push are recognised for this long (bridges.segway.replay)
    push_window: float = Field(default=DEFAULT_PUSH_WINDOW, gt=0)
    #: pushes remembered at most; beyond it the window shrinks (the oldest are forgotten and refused)
    push_replay_capacity: int = Field(default=DEFAULT_REPLAY_CAPACITY, ge=100)
    #: seconds a client may take to send a request's head, and then its body (408 and closed after)
    push_header_timeout: float = Field(default=DEFAULT_HEADER_TIMEOUT, gt=0)
    push_body_timeout: float = Field(default=DEFAULT_BODY_TIMEOUT, gt=0)
    #: connections one client address may hold at once (more: 503 and closed); null: no cap
    push_max_connections_per_client: int | None = Field(default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT, ge=1)
    #: with push_max_concurrency connections open, one that has waited this long for its request
    #: (a slow client, an idle kept-alive connection) is closed to make room for a new one
    push_evict_after: float = Field(default=DEFAULT_EVICT_AFTER, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _aliases_and_files(cls, data: Any) -> Any:
        if isinstance(data, dict) and "platform_code" in data:
            # the document's other name for the client id (``platformCode`` of the pushes)
            data = dict(data)
            platform_code = data.pop("platform_code")
            data.setdefault("client_id", platform_code)
        for secret in ("client_secret", "push_key_password"):
            if isinstance(data, dict) and data.get(f"{secret}_file") and not data.get(secret):
                path = Path(data[f"{secret}_file"])
                try:
                    data = {**data, secret: SecretStr(path.read_text(encoding="utf-8").strip())}
                except OSError as exc:
                    raise ValueError(f"cannot read {secret}_file {path}: {exc.strerror}") from None
        return data

    @model_validator(mode="after")
    def _push_tls(self) -> SegwaySettings:
        if self.push_key_file is not None and self.push_cert_file is None:
            raise ValueError("push_key_file needs push_cert_file (the certificate it belongs to)")
        if self.push_key_password is not None and self.push_cert_file is None:
            raise ValueError("push_key_password needs push_cert_file and push_key_file")
        return self

    @property
    def push_certificate(self) -> CertificateFiles | None:
        """The push intake's certificate for HTTPS, or None for plain HTTP."""
        if self.push_cert_file is None:
            return None
        return CertificateFiles(
            cert_file=self.push_cert_file,
            key_file=self.push_key_file,
            passphrase=None if self.push_key_password is None else self.push_key_password.get_secret_value(),
            cert_setting="vendors.segway.push_cert_file",
            key_setting="vendors.segway.push_key_file",
            unlock_hint="LOCKTWIN_SEGWAY_PUSH_KEY_PASSWORD or push_key_password_file",
        )

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _poll_off(cls, value: Any) -> Any:
        # TOML has no null and an environment variable is text: "off" is how either says push only
        if isinstance(value, str) and value.strip().lower() in ("off", "null", "none"):
            return None
        return value

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("devices must be unique")
        return value

    @property
    def api_base_url(self) -> str:
        return (self.base_url or region_base_url(self.client_id)).rstrip("/")
