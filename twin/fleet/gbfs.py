"""A GBFS v3.0 feed of the micromobility vendors, from the index, the zones and the configuration.

Files: ``gbfs.json``, ``system_information.json``, ``vehicle_types.json`` (configuration),
``vehicle_status.json`` (the index) and ``geofencing_zones.json`` (the zones; circles as 64-gons).
The rules of the specification that matter here:

- a vehicle in use does not appear: only LOCKED vehicles of the configured vendors with a position
  and a vehicle type are listed (UNLOCKED is in use; LOCKING/UNLOCKING/UNKNOWN/JAMMED are not
  rentable either);
- ``vehicle_id`` is random and rotated after every rental: a device gets a new one when it is next
  listed after having been UNLOCKED, or after it moved more than ``rotate_after_m`` since it got
  its id (a ride the service did not see). The mapping is kept in the fleet store only, never
  published or logged;
- ``current_fuel_percent`` is 0 to 1; ``current_range_meters`` is given for every motorised type
  (the vendor's reported range, else battery x ``max_range_meters``; a vehicle with neither is
  left out);
- data at most 5 minutes old: the bridges republish a device's state only when it changes, so a
  parked vehicle's ``updated_at`` (its ``last_reported``) is its last change. While every bridge
  process of the vendor is online (its retained ``bridge/.../state``) the service is following its
  devices live, and ``last_updated`` is now (in steps of ``status_ttl``, so the ETag holds); a
  vendor whose bridge is away keeps only vehicles that changed within ``max_age``, and
  ``last_updated`` is then the newest report listed;
- each file carries an ETag of its body (a ``If-None-Match`` that matches gets 304).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import secrets
from collections.abc import Callable
from typing import Any

from contracts.fleet import ZoneRule
from contracts.messages import LockState
from twin.fleet.clock import Clock, iso
from twin.fleet.geo import area_of, distance_m
from twin.fleet.index import Change, DeviceRecord, FleetIndex
from twin.fleet.settings import GbfsSettings, GbfsVehicleType
from twin.fleet.store import FleetStore
from twin.fleet.zones import ZoneBook
from twin.jsonenc import dumps

__all__ = ["FILES", "GbfsFeed", "etag"]

VERSION = "3.0"
FILES = ("gbfs", "system_information", "vehicle_types", "vehicle_status", "geofencing_zones")
_HUMAN = "human"


def etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class GbfsFeed:
    def __init__(
        self, *, settings: GbfsSettings, index: FleetIndex, zones: ZoneBook, store: FleetStore, clock: Clock
    ) -> None:
        self.settings = settings
        self.index = index
        self.zones = zones
        self.store = store
        self.clock = clock
        #: (vendor, device) -> (vehicle_id, latitude, longitude when it was given)
        self._ids: dict[tuple[str, str], tuple[str, float | None, float | None]] = {}
        self._vendors = frozenset(settings.vendors)
        #: when the configuration or the zones last changed (last_updated of the files made of them)
        self._static_since = math.floor(clock.now())

    def load(self) -> None:
        self._ids = self.store.vehicles()

    def on_change(self, change: Change) -> None:
        """A device in use loses its vehicle_id: it gets a new one when it is rentable again."""
        rec = change.record
        in_use = rec.vendor in self._vendors and rec.lock == LockState.UNLOCKED.value
        if in_use and self._ids.pop((rec.vendor, rec.device), None) is not None:
            self.store.drop_vehicle(rec.vendor, rec.device)

    # -- files -----------------------------------------------------------------------------------
    def render(self, name: str, base_url: str) -> dict[str, Any]:
        renderers: dict[str, Callable[[], tuple[dict[str, Any], float, int]]] = {
            "gbfs": lambda: self._gbfs(base_url),
            "system_information": self._system_information,
            "vehicle_types": self._vehicle_types,
            "vehicle_status": self._vehicle_status,
            "geofencing_zones": self._geofencing_zones,
        }
        data, updated, ttl = renderers[name]()
        return {
            "last_updated": iso(math.floor(updated)).replace("+00:00", "Z"),
            "ttl": ttl,
            "version": VERSION,
            "data": data,
        }

    def _gbfs(self, base_url: str) -> tuple[dict[str, Any], float, int]:
        base = (self.settings.public_url or base_url).rstrip("/")
        feeds = [{"name": n, "url": f"{base}/{n}.json"} for n in FILES]
        return {"feeds": feeds}, self._static_time(), self.settings.ttl

    def _static_time(self) -> float:
        return self._static_since

    def zones_changed(self) -> None:
        self._static_since = math.floor(self.clock.now())

    def _system_information(self) -> tuple[dict[str, Any], float, int]:
        s = self.settings
        lang = s.language
        data = {
            "system_id": s.system_id,
            "languages": [lang],
            "name": [{"text": s.name, "language": lang}],
            "opening_hours": s.opening_hours,
            "feed_contact_email": s.feed_contact_email,
            "timezone": s.timezone,
        }
        return data, self._static_time(), s.ttl

    def _vehicle_types(self) -> tuple[dict[str, Any], float, int]:
        lang = self.settings.language
        types = []
        for t in self.settings.vehicle_types:
            doc: dict[str, Any] = {
                "vehicle_type_id": t.vehicle_type_id,
                "form_factor": t.form_factor,
                "propulsion_type": t.propulsion_type,
            }
            if t.max_range_meters is not None:
                doc["max_range_meters"] = t.max_range_meters
            if t.name:
                doc["name"] = [{"text": t.name, "language": lang}]
            if t.rider_capacity is not None:
                doc["rider_capacity"] = t.rider_capacity
            types.append(doc)
        return {"vehicle_types": types}, self._static_time(), self.settings.ttl

    def vehicle_type(self, rec: DeviceRecord) -> GbfsVehicleType | None:
        for t in self.settings.vehicle_types:
            if t.vendor == rec.vendor and fnmatch.fnmatchcase(rec.model or "", t.model):
                return t
        return None

    def _vehicle_status(self) -> tuple[dict[str, Any], float, int]:
        now = self.clock.now()
        vehicles = []
        newest = 0.0
        for vendor in sorted(self._vendors):
            for key in sorted(self.index.by_vendor.get(vendor, ())):
                rec = self.index.records[key]
                row = self._vehicle(rec, now)
                if row is not None:
                    vehicles.append(row)
                    newest = max(newest, rec.updated_at or 0.0)
        return {"vehicles": vehicles}, newest or now, self.settings.status_ttl

    def _vehicle(self, rec: DeviceRecord, now: float) -> dict[str, Any] | None:
        if rec.lock != LockState.LOCKED.value or rec.key in self.index.unlisted or rec.pending:
            return None
        if rec.latitude is None or rec.longitude is None or rec.updated_at is None:
            return None
        if now - rec.updated_at > self.settings.max_age:
            return None
        vtype = self.vehicle_type(rec)
        if vtype is None:
            return None
        row: dict[str, Any] = {
            "vehicle_id": self._vehicle_id(rec),
            "lat": round(rec.latitude, 6),
            "lon": round(rec.longitude, 6),
            "is_reserved": False,
            "is_disabled": rec.online is False,
            "vehicle_type_id": vtype.vehicle_type_id,
            "last_reported": iso(math.floor(rec.updated_at)).replace("+00:00", "Z"),
        }
        if rec.battery is not None:
            row["current_fuel_percent"] = round(min(100.0, max(0.0, rec.battery)) / 100, 3)
        if vtype.propulsion_type != _HUMAN:
            metres = self._range(rec, vtype)
            if metres is None:
                return None  # a motorised vehicle must say how far it goes
            row["current_range_meters"] = metres
        return row

    def _range(self, rec: DeviceRecord, vtype: GbfsVehicleType) -> float | None:
        for name in self.settings.range_fields:
            value = rec.values.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
        if rec.battery is not None and vtype.max_range_meters is not None:
            return round(vtype.max_range_meters * min(100.0, max(0.0, rec.battery)) / 100, 1)
        return None

    def _vehicle_id(self, rec: DeviceRecord) -> str:
        ident = (rec.vendor, rec.device)
        known = self._ids.get(ident)
        if known is not None:
            vehicle_id, lat, lon = known
            moved = (
                lat is not None
                and lon is not None
                and rec.latitude is not None
                and rec.longitude is not None
                and distance_m(lon, lat, rec.longitude, rec.latitude) > self.settings.rotate_after_m
            )
            if not moved:
                return vehicle_id
        vehicle_id = secrets.token_urlsafe(12)
        self._ids[ident] = (vehicle_id, rec.latitude, rec.longitude)
        self.store.put_vehicle(rec.vendor, rec.device, vehicle_id, rec.latitude, rec.longitude)
        return vehicle_id

    def _geofencing_zones(self) -> tuple[dict[str, Any], float, int]:
        lang = self.settings.language
        features = []
        for zone in sorted(self.zones.zones.values(), key=lambda z: z.id):
            rules = zone.rules
            rule: dict[str, Any] = {
                "ride_start_allowed": not (ZoneRule.NO_RIDE in rules or ZoneRule.KEEP_LOCKED in rules),
                "ride_end_allowed": not (ZoneRule.NO_RIDE in rules or ZoneRule.NO_PARKING in rules),
                "ride_through_allowed": ZoneRule.NO_RIDE not in rules,
            }
            if zone.maximum_speed_kph is not None:
                rule["maximum_speed_kph"] = zone.maximum_speed_kph
            properties: dict[str, Any] = {"rules": [rule]}
            if zone.name:
                properties["name"] = [{"text": zone.name, "language": lang}]
            geometry = {"type": "MultiPolygon", "coordinates": area_of(zone.geometry).polygons()}
            features.append({"type": "Feature", "geometry": geometry, "properties": properties})
        data = {
            "geofencing_zones": {"type": "FeatureCollection", "features": features},
            "global_rules": [{"ride_start_allowed": True, "ride_end_allowed": True, "ride_through_allowed": True}],
        }
        return data, self._static_time(), self.settings.ttl

    def body(self, name: str, base_url: str) -> bytes:
        return dumps(self.render(name, base_url))
