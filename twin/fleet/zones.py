"""Zones: GeoJSON polygons and circles, from a file and by request; membership events.

Each zone is retained on ``{base}/fleet/zones/{id}`` and stored; the index keeps every device's
zones (a query term and a job target). ``entered`` / ``left`` go to ``{base}/fleet/zones/{id}/event``
when a device's reported position crosses a zone's edge, when a zone is put over devices or deleted
from under them. While the service loads the retained states after starting, membership is set up
without events: a device that was inside before the restart has not entered anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.fleet import FleetTopics, ZoneDocument, ZoneRule
from twin.fleet.clock import iso
from twin.fleet.geo import area_of
from twin.fleet.index import Change, DeviceRecord, FleetIndex
from twin.fleet.store import FleetStore
from twin.jsonenc import dumps

__all__ = ["ZoneBook", "ZoneError", "read_zones_file"]

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bool], None]


class ZoneError(ValueError):
    pass


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:4]:
        parts.append(f"{'.'.join(str(p) for p in err['loc']) or 'zone'}: {err['msg']}")
    return "; ".join(parts)


def read_zones_file(path: Path) -> list[ZoneDocument]:
    """A GeoJSON FeatureCollection (each feature's ``id`` or ``properties.id``, ``properties.name``
    and ``properties.rules``), or a JSON list of zone documents."""
    doc = json.loads(path.read_text())
    raw: list[dict[str, Any]]
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        raw = []
        for n, feature in enumerate(doc.get("features") or []):
            props = feature.get("properties") or {}
            zone: dict[str, Any] = {"id": feature.get("id") or props.get("id"), "geometry": feature.get("geometry")}
            for key in ("name", "rules", "maximum_speed_kph"):
                if key in props:
                    zone[key] = props[key]
            if zone["id"] is None:
                raise ZoneError(f"{path}: feature {n} has no id (feature.id or properties.id)")
            raw.append(zone)
    elif isinstance(doc, list):
        raw = doc
    else:
        raise ZoneError(f"{path}: expected a GeoJSON FeatureCollection or a list of zones")
    zones: list[ZoneDocument] = []
    for item in raw:
        try:
            parsed = ZoneDocument.model_validate(item)
            area_of(parsed.geometry)
        except ValidationError as exc:
            raise ZoneError(f"{path}: zone {item.get('id')!r}: {_explain(exc)}") from None
        except ValueError as exc:
            raise ZoneError(f"{path}: zone {item.get('id')!r}: geometry: {exc}") from None
        zones.append(parsed)
    return zones


class ZoneBook:
    def __init__(
        self,
        *,
        store: FleetStore,
        index: FleetIndex,
        topics: FleetTopics,
        send: Send,
        on_membership: Callable[[DeviceRecord], None] = lambda rec: None,
    ) -> None:
        self.store = store
        self.index = index
        self.topics = topics
        self.send = send
        #: called for a device whose zones changed (the keep-locked rule looks at it)
        self.on_membership = on_membership
        self.zones: dict[str, ZoneDocument] = {}
        #: False while the retained states load after a start (no events)
        self.live = False
        self._deleted: set[str] = set()

    def load(self, file: Path | None) -> None:
        for raw in self.store.zones():
            try:
                self._install(ZoneDocument.model_validate(raw), announce=False)
            except (ValidationError, ValueError) as exc:
                log.error("stored zone %r is invalid and was skipped: %s", raw.get("id"), exc)
        if file is not None:
            for zone in read_zones_file(file):
                self.put(zone)

    def put(self, zone: ZoneDocument) -> ZoneDocument:
        try:
            area_of(zone.geometry)
        except ValueError as exc:
            raise ZoneError(f"geometry: {exc}") from None
        self.store.put_zone(zone.id, zone.model_dump(mode="json"))
        self._deleted.discard(zone.id)
        self._install(zone, announce=True)
        return zone

    def _install(self, zone: ZoneDocument, *, announce: bool) -> None:
        self.zones[zone.id] = zone
        changes = self.index.put_area(zone.id, area_of(zone.geometry))
        if announce:
            self.publish(zone.id)
        for rec, entered in changes:
            self._event(zone.id, rec, entered)
            self.on_membership(rec)

    def delete(self, zone_id: str) -> bool:
        if zone_id not in self.zones:
            return False
        self.store.delete_zone(zone_id)
        del self.zones[zone_id]
        for rec, entered in self.index.remove_area(zone_id):
            self._event(zone_id, rec, entered)
        self._deleted.add(zone_id)
        self.send(self.topics.zone(zone_id), b"", True)  # an empty retained payload deletes
        return True

    def keep_locked(self, rec: DeviceRecord) -> str | None:
        """The first keep-locked zone the device is in, or None."""
        for zone_id in sorted(rec.zones):
            zone = self.zones.get(zone_id)
            if zone is not None and ZoneRule.KEEP_LOCKED in zone.rules:
                return zone_id
        return None

    def on_change(self, change: Change) -> None:
        for zone in change.entered:
            self._event(zone, change.record, True)
        for zone in change.left:
            self._event(zone, change.record, False)

    def _event(self, zone: str, rec: DeviceRecord, entered: bool) -> None:
        if not self.live:
            return
        doc = {
            "type": "entered" if entered else "left",
            "at": iso(time.time()),
            "vendor": rec.vendor,
            "device": rec.device,
            "zone": zone,
        }
        self.send(self.topics.zone_event(zone), dumps(doc), False)
        self.store.journal(f"zone.{doc['type']}", source=f"zone:{zone}", vendor=rec.vendor, device=rec.device)

    def publish(self, zone_id: str) -> None:
        self.send(self.topics.zone(zone_id), dumps(self.zones[zone_id].model_dump(mode="json")), True)

    def republish(self) -> None:
        for zone_id in self.zones:
            self.publish(zone_id)
        for zone_id in self._deleted:
            self.send(self.topics.zone(zone_id), b"", True)

    def members(self) -> dict[str, int]:
        return {z: len(self.index.by_zone.get(z, ())) for z in self.zones}
