"""Drive the official ``smartcar`` SDK against a served simulator; print what it parsed as JSON.

Run with SMARTCAR_API_ORIGIN and SMARTCAR_AUTH_ORIGIN set (the SDK reads them at import).
Usage: python sdk_conformance.py CLIENT_ID CLIENT_SECRET REDIRECT_URI CODE
"""

from __future__ import annotations

import json
import sys
from typing import Any

import smartcar


def error(call: Any) -> dict[str, Any]:
    try:
        call()
    except smartcar.SmartcarException as exc:
        return {
            "status_code": getattr(exc, "status_code", None),
            "type": getattr(exc, "type", None),
            "code": getattr(exc, "code", None),
            "description": getattr(exc, "description", None),
            "message": exc.message,
            "resolution": getattr(exc, "resolution", None),
            "request_id": getattr(exc, "request_id", None),
            "retry_after": getattr(exc, "retry_after", None),
            "doc_url": getattr(exc, "doc_url", None),
        }
    return {"type": "NO_ERROR"}


def main(client_id: str, client_secret: str, redirect_uri: str, code: str) -> dict[str, Any]:
    client = smartcar.AuthClient(client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri)
    access = client.exchange_code(code)
    out: dict[str, Any] = {"token_type": access.token_type, "expires_in": access.expires_in}
    page = smartcar.get_vehicles(access.access_token, {"limit": 2, "offset": 0})
    listing = smartcar.get_vehicles(access.access_token)
    out["vehicles"] = listing.vehicles
    out["paging"] = {"count": listing.paging.count, "offset": listing.paging.offset, "first_page": page.vehicles}
    out["user"] = smartcar.get_user(access.access_token).id
    first, second, third = listing.vehicles[:3]
    vehicle = smartcar.Vehicle(first, access.access_token)
    attributes = vehicle.attributes()
    out["attributes"] = {
        "id": attributes.id,
        "make": attributes.make,
        "model": attributes.model,
        "year": attributes.year,
    }
    unlocked = vehicle.unlock()
    out["unlock"] = {"status": unlocked.status, "message": unlocked.message, "request_id": unlocked.meta.request_id}
    status = vehicle.lock_status()
    out["lock_status_after_unlock"] = {
        "is_locked": status.is_locked,
        "doors": status.doors,
        "windows": status.windows,
        "sunroof": status.sunroof,
        "storage": status.storage,
        "charging_port": status.charging_port,
        "data_age": status.meta.data_age,
        "unit_system": status.meta.unit_system,
    }
    locked = vehicle.lock()
    out["lock"] = {"status": locked.status, "message": locked.message}
    out["lock_status_after_lock"] = vehicle.lock_status().is_locked
    battery = vehicle.battery()
    out["battery"] = {"percent_remaining": battery.percent_remaining, "range": battery.range}
    location = vehicle.location()
    out["location"] = {"latitude": location.latitude, "longitude": location.longitude}
    out["odometer"] = vehicle.odometer().distance
    refreshed = client.exchange_refresh_token(access.refresh_token)
    out["refreshed"] = refreshed.access_token != access.access_token
    out["errors"] = {
        "in_motion": error(smartcar.Vehicle(second, refreshed.access_token).lock),
        "rate_limit": error(smartcar.Vehicle(third, refreshed.access_token).lock_status),
        "authentication": error(smartcar.Vehicle(first, "not-a-token").lock_status),
        "reused_refresh_token": error(lambda: client.exchange_refresh_token(access.refresh_token)),
        "bad_code": error(lambda: client.exchange_code("not-a-code")),
        "unknown_vehicle": error(smartcar.Vehicle("nope", refreshed.access_token).lock_status),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5]), default=str))
