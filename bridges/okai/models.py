"""Typed models of the OKAI PaaS wire format, shared by the client and the simulator.

Field names are the vendor's own (camelCase) so that a model dumps to exactly what travels. What the
document states is marked [doc]; what public client code shows is [code]; the rest is [guess] and is
kept configurable in :mod:`bridges.okai.settings`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

__all__ = [
    "AUTH_PARAMS",
    "Envelope",
    "OkaiCode",
    "Operate",
    "ScooterLocation",
    "ScooterStatus",
    "SwitchLockRequest",
]

#: identity parameters that travel with every request (as parameters or, like the doc's curl, headers)
AUTH_PARAMS = ("userKey", "timestamp", "sign")

Operate = Literal["lock", "unlock"]


class OkaiCode(IntEnum):
    """Envelope codes. [guess] The vendor's codes are not public: these are the simulator's, and the
    client maps them through the configurable ``error_codes`` table (unknown codes: VENDOR_ERROR)."""

    SUCCESS = 200
    PARAM_ERROR = 10001
    USER_KEY_INVALID = 10002
    SIGN_ERROR = 10003
    TIMESTAMP_EXPIRED = 10004
    DEVICE_NOT_FOUND = 20001
    DEVICE_OFFLINE = 20002
    DEVICE_REFUSED = 20003


class Envelope(BaseModel):
    """Every answer: ``{"code": ..., "msg": ..., "data": ...}`` ([code]: clients read ``res.data.data``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    code: int | str
    msg: str | None = Field(default=None, validation_alias=AliasChoices("msg", "message"))
    data: Any = None


class SwitchLockRequest(BaseModel):
    """Body of ``POST /scooter/control/switchLock`` (without the identity parameters). [doc]"""

    model_config = ConfigDict(extra="ignore")

    imei: str = Field(min_length=1, max_length=32)
    operate: Operate
    #: seconds the command stays valid; a scooter that gets it later drops it
    expireTime: int = Field(ge=1)


class ScooterStatus(BaseModel):
    """``data`` of ``GET /scooter/query/status``.

    [code] batteryPercent, latitude, longitude, speed (km/h), totalMile, remainMile.
    [guess] lockStatus (1 locked, 0 unlocked), online, updateTime (epoch milliseconds).
    """

    model_config = ConfigDict(extra="allow")

    imei: str | None = None
    batteryPercent: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    speed: float | None = None
    totalMile: float | None = None
    remainMile: float | None = None
    lockStatus: int | None = None
    online: bool | None = None
    updateTime: int | None = None


class ScooterLocation(BaseModel):
    """``data`` of ``GET /scooter/query/location``: [code] latitude, longitude; [guess] gpsTime (ms)."""

    model_config = ConfigDict(extra="allow")

    imei: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    gpsTime: int | None = None
