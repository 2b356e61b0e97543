"""What the simulated cloud does for each business endpoint, given a vehicle and a request body.

A handler returns the envelope's ``data`` or raises :class:`SimError` with a 15xxx code. Validation
follows the document's ranges and answers ``15004 parameter error``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridges.segway.simulator.fleet import Vehicle

__all__ = ["MESSAGES", "ROUTES", "Route", "SimError"]

MESSAGES: dict[int, str] = {
    0: "Success",
    15001: "server error",
    15004: "parameter error",
    15100: "incorrect platform info",
    15101: "token verification failed",
    15102: "device not found",
    15300: "inactive device",
    15301: "offline device",
    15302: "device response timeout",
    15303: "command send failed",
    15400: "latest location not found via device",
    15500: "device upgrading: command can not be executed",
    15600: "lock failed: vehicle is riding",
    15601: "device lock command failed",
    15602: "device lock failed: network error",
    15603: "handlebar lock failed",
    15611: "device unlock command failed",
    15612: "device unlock failed: network error",
    15635: "open failed: please operate when mopeds is unlocking",
    15638: "device execute failure",
    15707: "NOT supported by this vehicle or its firmware",
    15990: "API call is restricted, please contact Segway related personnel",
    15996: "device lock failed: denied by geofence strategy",
    15997: "device lock failed: unable to lock while riding",
}

_KEY_RE = re.compile(r"^[A-Za-z0-9]{8}$")


class SimError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(MESSAGES.get(code, "error"))
        self.code = code


Handler = Callable[[Vehicle, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Route:
    method: str
    handler: Handler
    #: the id field of this page's envelope (``resId`` on battery-info, ``opId`` elsewhere)
    id_field: str = "opId"


def _int(body: Mapping[str, Any], key: str, low: int, high: int, *, required: bool = False) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise SimError(15004)
        return None
    if isinstance(value, bool):
        raise SimError(15004)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SimError(15004) from None
    if number != value and str(number) != str(value):
        raise SimError(15004)
    if not low <= number <= high:
        raise SimError(15004)
    return number


def _online(vehicle: Vehicle) -> None:
    if not vehicle.online:
        raise SimError(15301)


def _ready(vehicle: Vehicle) -> None:
    _online(vehicle)
    if vehicle.upgrading:
        raise SimError(15500)


def status(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _online(vehicle)
    return vehicle.status()


def location(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _online(vehicle)
    if not vehicle.has_fix:
        raise SimError(15400)
    if str(body.get("realTimeLocation", "")).lower() == "true":
        vehicle.gps_time = time.time()  # the vehicle was asked for a fresh fix
    return vehicle.location()


def battery_info(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _online(vehicle)
    return vehicle.battery_info()


def get_key(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _online(vehicle)
    return {"iotCode": vehicle.iot_code, "key": vehicle.bluetooth_key}


def unlock(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _ready(vehicle)
    vehicle.command_lock(False)
    return None


def lock(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _ready(vehicle)
    if vehicle.riding:
        raise SimError(vehicle.riding_code)
    if vehicle.geofence_denied:
        raise SimError(15996)
    if vehicle.jammed:
        raise SimError(15603)
    vehicle.command_lock(True)
    return None


def battery_cover(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _ready(vehicle)
    if vehicle.locked or vehicle.bolt_moving:
        raise SimError(15635)
    vehicle.battery_cover_open = True
    return None


def sound(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _int(body, "controlType", 1, 9, required=True)
    _ready(vehicle)
    vehicle.finds += 1
    return None


def _store(vehicle: Vehicle, name: str, body: Mapping[str, Any]) -> None:
    vehicle.settings[name] = {k: v for k, v in body.items() if k != "iotCode"}


def switch_setting(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _int(body, "alertSensitivity", 1, 3)
    _int(body, "lowPowerValue", 10, 30)
    _ready(vehicle)
    _store(vehicle, "switch", body)
    return None


def switch_enable(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    for key in ("assistedMode", "kickstandCheck", "lowPowerSwitch"):
        _int(body, key, 0, 2)
    _ready(vehicle)
    _store(vehicle, "able-switch", body)
    return None


def ambient(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _int(body, "bright", 1, 3, required=True)
    if not isinstance(body.get("parkingMode"), dict):
        raise SimError(15004)
    for key in ("parkingMode", "cruiseMode", "readyMode", "faultMode"):
        effect = body.get(key)
        if effect is None:
            continue
        if not isinstance(effect, dict):
            raise SimError(15004)
        _int(effect, "mode", 1, 2, required=True)
        _int(effect, "color", 1, 7, required=True)
    _ready(vehicle)
    _store(vehicle, "ambient", body)
    return None


def sound_setting(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    _int(body, "workMode", 0, 2, required=True)
    _int(body, "volume", 1, 3)
    mask = body.get("ebcqMask")
    if mask is not None:
        if not isinstance(mask, dict):
            raise SimError(15004)
        for key in mask:
            _int(mask, key, 0, 2)
    _ready(vehicle)
    _store(vehicle, "sound", body)
    return None


def set_key(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    key = body.get("key")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise SimError(15004)
    _ready(vehicle)
    vehicle.bluetooth_key = key
    return None


def interval(vehicle: Vehicle, body: Mapping[str, Any]) -> Any:
    groups = {
        "locationInterval": ("unlockStatus", "lockStatus"),
        "statusInterval": ("ridingStatus", "nonRiding", "lockStatus"),
    }
    for group, keys in groups.items():
        values = body.get(group)
        if not isinstance(values, dict):
            raise SimError(15004)
        for key in keys:
            _int(values, key, 10, 65535, required=True)
    _ready(vehicle)
    if not vehicle.supports_intervals:
        raise SimError(15707)
    _store(vehicle, "interval", body)
    return None


ROUTES: dict[str, Route] = {
    "/api/v2/vehicle/query/current/status": Route("GET", status),
    # the status page's curl spells the path with "mebike"; the cloud answers both
    "/api/v2/mebike/query/current/status": Route("GET", status),
    "/api/v2/vehicle/query/current/location": Route("GET", location),
    "/api/v2/mopeds/query/current/battery-info": Route("GET", battery_info, "resId"),
    "/api/v2/vehicle/query/current/bluetooth-key": Route("GET", get_key),
    "/api/v2/vehicle/control/unlock": Route("POST", unlock),
    "/api/v2/vehicle/control/lock": Route("POST", lock),
    "/api/v2/vehicle/control/battery-cover": Route("POST", battery_cover),
    "/api/v2/vehicle/control/sound": Route("POST", sound),
    "/api/v2/mopeds/setting/switch": Route("POST", switch_setting),
    "/api/v2/mopeds/setting/able-switch": Route("POST", switch_enable),
    "/api/v2/vehicle/setting/ambient": Route("POST", ambient),
    "/api/v2/vehicle/setting/sound": Route("POST", sound_setting),
    "/api/v2/vehicle/setting/bluetooth-key": Route("POST", set_key),
    "/api/v2/vehicle/setting/interval": Route("POST", interval),
}
