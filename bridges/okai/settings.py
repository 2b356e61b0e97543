"""Configuration of the OKAI bridge: the ``[vendors.okai]`` table plus ``LOCKTWIN_OKAI_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridges.okai.models import OkaiCode
from contracts.errors import ErrorCode
from contracts.messages import DEVICE_ID_PATTERN

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_ERROR_CODES", "OkaiSettings"]

DEFAULT_BASE_URL = "https://iot-api.okai.co/shareos-device"
DEFAULT_TIMEOUT = 10.0
DEFAULT_POLL_INTERVAL = 30.0

#: vendor envelope code -> normalized code. [guess] OKAI's codes are not public; anything else that is
#: not a success code becomes VENDOR_ERROR with the vendor's code and message kept.
DEFAULT_ERROR_CODES: dict[str, ErrorCode] = {
    str(int(OkaiCode.PARAM_ERROR)): ErrorCode.INVALID_PAYLOAD,
    str(int(OkaiCode.USER_KEY_INVALID)): ErrorCode.AUTH_FAILED,
    str(int(OkaiCode.SIGN_ERROR)): ErrorCode.AUTH_FAILED,
    str(int(OkaiCode.TIMESTAMP_EXPIRED)): ErrorCode.AUTH_FAILED,
    str(int(OkaiCode.DEVICE_NOT_FOUND)): ErrorCode.UNKNOWN_DEVICE,
    str(int(OkaiCode.DEVICE_OFFLINE)): ErrorCode.DEVICE_OFFLINE,
}

#: metres per unit of ``totalMile``/``remainMile``
DISTANCE_FACTORS: dict[str, float] = {"km": 1000.0, "mi": 1609.344, "m": 1.0}


class OkaiSettings(BaseSettings):
    """Strict: an unknown key is a configuration error."""

    model_config = SettingsConfigDict(env_prefix="LOCKTWIN_OKAI_", extra="forbid", frozen=True)

    user_key: SecretStr = Field(description="the customer's identity key (userKey)")
    sign_key: SecretStr | None = Field(default=None, description="signKey; None when signing is off")
    #: files holding the keys (the configuration file may name a file, never hold a secret)
    user_key_file: Path | None = None
    sign_key_file: Path | None = None
    #: "all": every request parameter except sign (userKey and timestamp included) [guess, the default];
    #: "business": only the operation's parameters, as the document's worked example spells it
    sign_params: Literal["all", "business"] = "all"
    #: "headers": identity as HTTP headers, like the document's curl sample (keeps keys out of URLs);
    #: "params": as request parameters (query string on GET, JSON body on POST), like public client code
    auth_in: Literal["params", "headers"] = "headers"
    #: the document's table shows seconds, its curl sample milliseconds
    timestamp_unit: Literal["s", "ms"] = "ms"
    base_url: str = DEFAULT_BASE_URL
    devices: list[Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, description="IMEIs served by this bridge"
    )
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)
    poll_interval: float | None = Field(default=DEFAULT_POLL_INTERVAL, gt=0)
    #: unit of totalMile/remainMile as the vendor reports them [guess: km]
    distance_unit: Literal["km", "mi", "m"] = "km"
    #: the status field that says whether the scooter is locked [guess: lockStatus, 1 locked, 0 unlocked]
    lock_field: str = "lockStatus"
    locked_values: list[int | str] = Field(default_factory=lambda: list[int | str]([1, "1"]))
    unlocked_values: list[int | str] = Field(default_factory=lambda: list[int | str]([0, "0"]))
    success_codes: list[int | str] = Field(default_factory=lambda: list[int | str]([int(OkaiCode.SUCCESS), 0]))
    error_codes: dict[str, ErrorCode] = Field(default_factory=lambda: dict(DEFAULT_ERROR_CODES))

    @model_validator(mode="before")
    @classmethod
    def _keys_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in ("user_key", "sign_key"):
            path = data.get(f"{key}_file")
            if path is not None and data.get(key) in (None, ""):
                data = {**data, key: Path(path).read_text(encoding="utf-8").strip()}
        return data

    @property
    def metres_per_unit(self) -> float:
        return DISTANCE_FACTORS[self.distance_unit]
