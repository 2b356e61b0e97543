"""Arguments of the ``/request/{action}`` operations, with the document's ranges.

These are what MQTT users send (snake_case); each converts to the vendor request model. They
forbid unknown keys, so a typo is refused before any vendor call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridges.segway.models import (
    BLUETOOTH_KEY_PATTERN,
    AmbientLightRequest,
    BluetoothKeyRequest,
    LampEffect,
    LocationInterval,
    SoundMask,
    SoundSettingRequest,
    StatusInterval,
    SwitchEnableRequest,
    SwitchSettingRequest,
    UploadIntervalRequest,
)

__all__ = [
    "AmbientLightArgs",
    "BluetoothKeyArgs",
    "EnableSwitchesArgs",
    "LampArgs",
    "LocationArgs",
    "NoArgs",
    "SoundArgs",
    "SwitchesArgs",
    "UploadIntervalArgs",
]

Mask = Literal[0, 1, 2]
COLORS = {"green": 1, "red": 2, "orange": 3, "blue": 4, "cyan": 5, "violet": 6, "white": 7}
LEVELS = {"low": 1, "medium": 2, "high": 3}


def _switch(value: bool | None) -> Literal[0, 1, 2]:
    """``None`` -> 0 (no setting), ``False`` -> 1 (off), ``True`` -> 2 (on)."""
    if value is None:
        return 0
    return 2 if value else 1


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    pass


class LocationArgs(_Args):
    #: ask the vehicle for a fresh fix instead of the last one the cloud knows
    realtime: bool = True


class SwitchesArgs(_Args):
    alert_sensitivity: int | None = Field(default=None, ge=1, le=3)
    low_power_value: int | None = Field(default=None, ge=10, le=30, description="percent")

    @model_validator(mode="after")
    def _something(self) -> SwitchesArgs:
        if self.alert_sensitivity is None and self.low_power_value is None:
            raise ValueError("give alert_sensitivity and/or low_power_value")
        return self

    def request(self, iot_code: str) -> SwitchSettingRequest:
        return SwitchSettingRequest(
            iot_code=iot_code, alert_sensitivity=self.alert_sensitivity, low_power_value=self.low_power_value
        )


class EnableSwitchesArgs(_Args):
    assisted_mode: bool | None = None
    kickstand_check: bool | None = None
    low_power_switch: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> EnableSwitchesArgs:
        if self.assisted_mode is None and self.kickstand_check is None and self.low_power_switch is None:
            raise ValueError("give assisted_mode, kickstand_check and/or low_power_switch")
        return self

    def request(self, iot_code: str) -> SwitchEnableRequest:
        return SwitchEnableRequest(
            iot_code=iot_code,
            assisted_mode=_switch(self.assisted_mode),
            kickstand_check=_switch(self.kickstand_check),
            low_power_switch=_switch(self.low_power_switch),
        )


class LampArgs(_Args):
    on: bool
    color: Literal["green", "red", "orange", "blue", "cyan", "violet", "white"] = "white"

    def wire(self) -> LampEffect:
        return LampEffect(mode=2 if self.on else 1, color=COLORS[self.color])


class AmbientLightArgs(_Args):
    brightness: Literal["low", "medium", "high"]
    parking: LampArgs
    cruise: LampArgs | None = None
    ready: LampArgs | None = None
    fault: LampArgs | None = None

    def request(self, iot_code: str) -> AmbientLightRequest:
        return AmbientLightRequest(
            iot_code=iot_code,
            bright=LEVELS[self.brightness],
            parking_mode=self.parking.wire(),
            cruise_mode=self.cruise.wire() if self.cruise else None,
            ready_mode=self.ready.wire() if self.ready else None,
            fault_mode=self.fault.wire() if self.fault else None,
        )


class SoundMaskArgs(_Args):
    """Per sound: 0 disable, 1 enable, 2 keep original."""

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


class SoundArgs(_Args):
    #: None: leave as is; False: sounds off; True: sounds on
    enabled: bool | None = None
    volume: int | None = Field(default=None, ge=1, le=3)
    sounds: SoundMaskArgs | None = None

    def request(self, iot_code: str) -> SoundSettingRequest:
        return SoundSettingRequest(
            iot_code=iot_code,
            work_mode=_switch(self.enabled),
            volume=self.volume,
            ebcq_mask=SoundMask.model_validate(self.sounds.model_dump()) if self.sounds else None,
        )


class BluetoothKeyArgs(_Args):
    key: str = Field(pattern=BLUETOOTH_KEY_PATTERN, repr=False, description="8 letters and digits")

    def request(self, iot_code: str) -> BluetoothKeyRequest:
        return BluetoothKeyRequest(iot_code=iot_code, key=self.key)


class LocationIntervalArgs(_Args):
    unlocked: int = Field(ge=10, le=65535, description="seconds between positions while unlocked")
    locked: int = Field(ge=10, le=65535, description="seconds between positions while locked")


class StatusIntervalArgs(_Args):
    riding: int = Field(ge=10, le=65535)
    not_riding: int = Field(ge=10, le=65535)
    locked: int = Field(ge=10, le=65535)


class UploadIntervalArgs(_Args):
    location: LocationIntervalArgs
    status: StatusIntervalArgs

    def request(self, iot_code: str) -> UploadIntervalRequest:
        return UploadIntervalRequest(
            iot_code=iot_code,
            location_interval=LocationInterval(unlock_status=self.location.unlocked, lock_status=self.location.locked),
            status_interval=StatusInterval(
                riding_status=self.status.riding,
                non_riding=self.status.not_riding,
                lock_status=self.status.locked,
            ),
        )
