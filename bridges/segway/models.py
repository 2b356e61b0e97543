"""Typed models of the Segway Discovery wire format (requests, answers, pushes).

Answers and pushes tolerate unknown keys (Segway adds fields) and accept the document's spelling
variants (``remainingRange``/``remainderRange``, ``gpsUtcTime``/``gpsUTCTime``). Requests are
strict: their ranges are the document's, so a bad argument never reaches the cloud.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "BLUETOOTH_KEY_PATTERN",
    "AlertPush",
    "AmbientLightRequest",
    "BatteryData",
    "BatteryInfo",
    "BluetoothKey",
    "BluetoothKeyRequest",
    "Envelope",
    "FaultPush",
    "IotRequest",
    "LampEffect",
    "LocationInterval",
    "LocationPush",
    "SoundControlRequest",
    "SoundMask",
    "SoundSettingRequest",
    "StatusInterval",
    "StatusPush",
    "SwitchEnableRequest",
    "SwitchSettingRequest",
    "TokenResponse",
    "UploadIntervalRequest",
    "VehicleLocation",
    "VehicleStatus",
    "from_vendor_time",
]

BLUETOOTH_KEY_PATTERN = r"^[A-Za-z0-9]{8}$"


def from_vendor_time(value: float | int | str | None) -> datetime | None:
    """Segway timestamps: epoch seconds (``statusUtcTime``) or milliseconds (``t``), maybe as text."""
    if value is None or value == "":
        return None
    number = float(value)
    if number <= 0:
        return None
    if number > 1e11:  # milliseconds
        number /= 1000.0
    return datetime.fromtimestamp(number, tz=UTC)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)


class _DeviceAnswer(_Answer):
    iot_code: str

    @field_validator("iot_code", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # the document's examples send the IMEI as a number as often as a string
        return str(value) if isinstance(value, int) else value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class TokenResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1, repr=False)
    token_type: str = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: float = Field(gt=0)
    scope: str | None = None


class Envelope(BaseModel):
    """``{"code": 0, "msg": "Success", "data": ..., "t": ms, "opId": "..."}`` (``resId`` on some pages)."""

    model_config = ConfigDict(extra="ignore")

    code: int
    msg: str | None = None
    data: Any = None
    t: int | None = None
    op_id: str | None = Field(default=None, validation_alias=AliasChoices("opId", "resId"))


class VehicleStatus(_DeviceAnswer):
    online: bool | None = None
    locked: bool | None = None
    lock_voltage: float | None = None
    network_signal: int | None = None
    charging: bool | None = None
    power_percent: float | None = None
    speed_mode: int | None = None
    speed: float | None = None
    odometer: float | None = None
    #: unit 10 m
    remaining_range: float | None = Field(
        default=None, validation_alias=AliasChoices("remainingRange", "remainderRange", "remaining_range")
    )
    total_riding_secs: int | None = None
    status_utc_time: float | None = Field(
        default=None, validation_alias=AliasChoices("statusUtcTime", "statusUTCTime", "status_utc_time")
    )


class VehicleLocation(_DeviceAnswer):
    latitude: float | None = None
    longitude: float | None = None
    satellite_number: int | None = None
    hdop: float | None = None
    altitude: float | None = None
    gps_utc_time: float | None = Field(
        default=None, validation_alias=AliasChoices("gpsUtcTime", "gpsUTCTime", "gps_utc_time")
    )

    @property
    def has_fix(self) -> bool:
        """A usable position: both coordinates, in range, and not the ``0.0/0.0`` of no fix."""
        lat, lon = self.latitude, self.longitude
        if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
            return False
        return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


class BatteryData(_Answer):
    battery_port: int | None = None
    battery_percent: float | None = None
    battery_voltage: float | None = None
    cycle_times: int | None = None
    #: the document spells it ``temperatrue``
    temperature: float | None = Field(default=None, validation_alias=AliasChoices("temperatrue", "temperature"))


class BatteryInfo(_DeviceAnswer):
    charging: bool | None = None
    vehicle_percent: float | None = None
    battery_count: int | None = None
    driving_voltage: float | None = None
    current_power: float | None = None
    iot_percent: float | None = None
    #: unit 10 mV (411 -> 4.11 V)
    iot_voltage: float | None = None
    battery_data: list[BatteryData] = Field(default_factory=list)


class BluetoothKey(_DeviceAnswer):
    key: str = Field(repr=False)


# ---- requests --------------------------------------------------------------------------------------

Switch3 = Literal[0, 1, 2]  # 0 no setting, 1 off, 2 on
Mask = Literal[0, 1, 2]  # 0 disable, 1 enable, 2 keep original


class IotRequest(_Request):
    iot_code: str = Field(min_length=1)


class SoundControlRequest(IotRequest):
    #: 2 -> vehicle finding (the document's only documented value; its example sends 3)
    control_type: int = Field(default=2, ge=1, le=9)


class SwitchSettingRequest(IotRequest):
    alert_sensitivity: int | None = Field(default=None, ge=1, le=3)
    low_power_value: int | None = Field(default=None, ge=10, le=30)


class SwitchEnableRequest(IotRequest):
    assisted_mode: Switch3 | None = None
    kickstand_check: Switch3 | None = None
    low_power_switch: Switch3 | None = None


class LampEffect(_Request):
    mode: Literal[1, 2]  # 1 off, 2 always on
    color: int = Field(ge=1, le=7)  # green red orange blue cyan violet white


class AmbientLightRequest(IotRequest):
    bright: Literal[1, 2, 3]
    parking_mode: LampEffect
    cruise_mode: LampEffect | None = None
    ready_mode: LampEffect | None = None
    fault_mode: LampEffect | None = None


class SoundMask(_Request):
    unlocked: Mask | None = None
    locked: Mask | None = None
    open_boxes: Mask | None = None
    toot: Mask | None = None
    kickstand: Mask | None = None
    gear_up: Mask | None = None
    gear_down: Mask | None = None
    enter_cruise: Mask | None = None
    exit_cruise: Mask | None = None
    set: Mask | None = None
    battery_inserted: Mask | None = None


class SoundSettingRequest(IotRequest):
    work_mode: Switch3
    volume: int | None = Field(default=None, ge=1, le=3)
    ebcq_mask: SoundMask | None = None


class BluetoothKeyRequest(IotRequest):
    key: str = Field(pattern=BLUETOOTH_KEY_PATTERN, repr=False)


class LocationInterval(_Request):
    unlock_status: int = Field(ge=10, le=65535)
    lock_status: int = Field(ge=10, le=65535)


class StatusInterval(_Request):
    riding_status: int = Field(ge=10, le=65535)
    non_riding: int = Field(ge=10, le=65535)
    lock_status: int = Field(ge=10, le=65535)


class UploadIntervalRequest(IotRequest):
    location_interval: LocationInterval
    status_interval: StatusInterval


# ---- pushes (form-encoded, every value arrives as text) ---------------------------------------------


def _form_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return value


class _Push(_DeviceAnswer):
    platform_code: str | None = None


class StatusPush(_Push, VehicleStatus):
    @field_validator("online", "locked", "charging", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        return _form_bool(value)


class LocationPush(_Push, VehicleLocation):
    location_status: str | None = None

    @property
    def has_fix(self) -> bool:
        return self.location_status != "invalid" and super().has_fix


class AlertPush(_Push):
    status_utc_time: float | None = Field(default=None, validation_alias=AliasChoices("statusUtcTime", "statusUTCTime"))
    alert_status: int = 0
    code: int


class FaultPush(_Push):
    status_utc_time: float | None = Field(default=None, validation_alias=AliasChoices("statusUtcTime", "statusUTCTime"))
    fault_status: int = 0
    code: int
