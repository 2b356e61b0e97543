"""Settings of the operator console: the ``[console]`` table of the configuration (``LOCKTWIN_CONSOLE__*``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_CONSOLE_PORT", "ConsoleSettings"]

DEFAULT_CONSOLE_PORT = 8080


class ConsoleSettings(BaseModel):
    """Where the console listens, how long a login lasts, and the map's optional tile layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_CONSOLE_PORT, ge=0, le=65535)
    session_idle: float = Field(
        default=1800.0, gt=0, description="seconds a session lives without a request and without an open page"
    )
    session_max: float = Field(default=12 * 3600.0, gt=0, description="seconds a login lasts at most (a shift)")
    max_sessions: int = Field(
        default=50, ge=1, description="logins at once: each holds an MQTT connection and a copy of the fleet"
    )
    secure_cookies: bool | None = Field(
        default=None, description="Secure cookies; None: when the request came over HTTPS (behind a TLS proxy)"
    )
    login_failures: int = Field(default=5, ge=1, description="failed logins of one username from one address ...")
    login_lockout: float = Field(default=300.0, gt=0, description="... within this many seconds lock it out as long")
    coalesce: float = Field(default=0.25, gt=0, le=5, description="seconds between two updates sent to a page")
    command_expiry: float = Field(
        default=30.0, gt=0, le=300, description="expires_in of every command: a late one is never acted on"
    )
    tile_url: str | None = Field(
        default=None,
        description="map tiles, an XYZ template such as https://tiles.example/{z}/{x}/{y}.png (None: a plain map)",
    )
    tile_attribution: str = Field(default="", max_length=200, description="shown under the map with the tiles")
    login_hint: str = Field(default="", max_length=200, description="a line under the login form")

    @field_validator("tile_url")
    @classmethod
    def _check_tile_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("console.tile_url must be an http(s) URL template")
        if not all(f"{{{k}}}" in url for k in ("z", "x", "y")):
            raise ValueError("console.tile_url must contain {z}, {x} and {y}")
        if parts.username or parts.password or any(c in url for c in "'\" \n;"):
            raise ValueError("console.tile_url must not carry credentials, quotes, spaces or semicolons")
        return url

    @property
    def tile_origin(self) -> str | None:
        """The tiles' origin, allowed as an image source by the Content-Security-Policy."""
        if self.tile_url is None:
            return None
        parts = urlsplit(self.tile_url)
        return f"{parts.scheme}://{parts.netloc}"
