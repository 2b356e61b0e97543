"""Typed request and response bodies of the Smartcar API (v2.0) and its OAuth token endpoint."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionResponse",
    "Attributes",
    "Battery",
    "ErrorBody",
    "Location",
    "OAuthError",
    "Odometer",
    "OpeningStatus",
    "Paging",
    "Resolution",
    "SecurityAction",
    "SecurityRequest",
    "SecurityStatus",
    "TokenResponse",
    "User",
    "VehicleList",
]


class _Vendor(BaseModel):
    """Vendor answers: unknown keys are tolerated (Smartcar adds fields over time)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TokenResponse(_Vendor):
    access_token: str = Field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_in: int = Field(gt=0)
    refresh_token: str = Field(repr=False)


class OAuthError(_Vendor):
    error: str
    error_description: str | None = None


class Resolution(_Vendor):
    type: str | None = None
    url: str | None = None


class ErrorBody(_Vendor):
    """Smartcar's v2 error shape."""

    type: str
    code: str | None = None
    description: str = ""
    doc_url: str | None = Field(default=None, alias="docURL")
    status_code: int | None = Field(default=None, alias="statusCode")
    request_id: str | None = Field(default=None, alias="requestId")
    resolution: Resolution | None = None
    suggested_user_message: str | None = Field(default=None, alias="suggestedUserMessage")


class User(_Vendor):
    id: str


class Paging(_Vendor):
    count: int
    offset: int


class VehicleList(_Vendor):
    vehicles: list[str]
    paging: Paging


class Attributes(_Vendor):
    id: str
    make: str | None = None
    model: str | None = None
    year: int | None = None


class SecurityAction(StrEnum):
    LOCK = "LOCK"
    UNLOCK = "UNLOCK"


class SecurityRequest(_Vendor):
    action: SecurityAction


class ActionResponse(_Vendor):
    status: str
    message: str | None = None


OpenState = Literal["OPEN", "CLOSED", "UNKNOWN"]


class OpeningStatus(_Vendor):
    type: str
    status: OpenState = "UNKNOWN"


class SecurityStatus(_Vendor):
    is_locked: bool | None = Field(alias="isLocked")
    doors: list[OpeningStatus] = Field(default_factory=list)
    windows: list[OpeningStatus] = Field(default_factory=list)
    sunroof: list[OpeningStatus] = Field(default_factory=list)
    storage: list[OpeningStatus] = Field(default_factory=list)
    charging_port: list[OpeningStatus] = Field(default_factory=list, alias="chargingPort")


class Battery(_Vendor):
    percent_remaining: float = Field(alias="percentRemaining", ge=0, le=1)
    #: kilometres (metric unit system)
    range: float | None = None


class Location(_Vendor):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class Odometer(_Vendor):
    #: kilometres (metric unit system)
    distance: float
