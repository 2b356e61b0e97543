"""Geometry of zones: GeoJSON polygons, multipolygons and circles, on longitude/latitude degrees.

Point-in-polygon is the even-odd ray-casting test (holes are rings like any other, so a point in a
hole is outside), behind a bounding-box check; circles use the haversine distance. Zones are city
blocks to districts, where treating degrees as a plane inside one polygon is exact enough (the
edges are what the operator drew), and a zone crossing the antimeridian is refused. shapely would
add GEOS (a 2.5 MB compiled wheel) for this one predicate; these ~150 lines are tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.fleet import MultiPolygonGeometry, PointGeometry, PolygonGeometry

__all__ = ["EARTH_RADIUS_M", "Area", "BoundingBox", "Circle", "Polygons", "area_of", "distance_m"]

EARTH_RADIUS_M = 6_371_008.8
#: corners of the polygon a circle is published as (GBFS knows only multipolygons)
CIRCLE_VERTICES = 64

Ring = list[tuple[float, float]]


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class BoundingBox:
    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        for lon in (self.west, self.east):
            if not -180 <= lon <= 180:
                raise ValueError(f"longitude {lon} out of range (-180..180; coordinates are longitude first)")
        for lat in (self.south, self.north):
            if not -90 <= lat <= 90:
                raise ValueError(f"latitude {lat} out of range (-90..90; coordinates are longitude first)")
        if self.west > self.east or self.south > self.north:
            raise ValueError("a bounding box is west,south,east,north with west <= east and south <= north")

    def contains(self, lon: float, lat: float) -> bool:
        return self.west <= lon <= self.east and self.south <= lat <= self.north


def _in_ring(ring: Ring, lon: float, lat: float) -> bool:
    inside = False
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
            inside = not inside
        x1, y1 = x2, y2
    return inside


def _ring(raw: Sequence[Sequence[float]]) -> Ring:
    ring = [(float(p[0]), float(p[1])) for p in raw]
    if ring[0] != ring[-1]:
        raise ValueError("a polygon ring must be closed (its last position equal to its first)")
    for lon, lat in ring:
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"position [{lon}, {lat}] out of range (GeoJSON positions are [longitude, latitude])")
    if len(set(ring)) < 3:
        raise ValueError("a polygon ring needs at least three distinct positions")
    if max(lon for lon, _ in ring) - min(lon for lon, _ in ring) > 180:
        raise ValueError("a zone may not span more than 180 degrees of longitude (antimeridian)")
    return ring[:-1]


class Area:
    """Something a point is inside of or not."""

    bbox: BoundingBox

    def contains(self, lon: float, lat: float) -> bool:
        raise NotImplementedError

    def polygons(self) -> list[list[list[list[float]]]]:
        """As GeoJSON MultiPolygon coordinates (closed rings)."""
        raise NotImplementedError


class Polygons(Area):
    """One or more polygons, each an outer ring and its holes."""

    def __init__(self, polygons: Sequence[Sequence[Sequence[Sequence[float]]]]) -> None:
        self._polygons = [[_ring(r) for r in polygon] for polygon in polygons]
        points = [p for polygon in self._polygons for p in polygon[0]]
        self.bbox = BoundingBox(
            min(x for x, _ in points), min(y for _, y in points), max(x for x, _ in points), max(y for _, y in points)
        )
        self._boxes = [
            BoundingBox(
                min(x for x, _ in p[0]), min(y for _, y in p[0]), max(x for x, _ in p[0]), max(y for _, y in p[0])
            )
            for p in self._polygons
        ]

    def contains(self, lon: float, lat: float) -> bool:
        if not self.bbox.contains(lon, lat):
            return False
        for box, polygon in zip(self._boxes, self._polygons, strict=True):
            if box.contains(lon, lat) and sum(_in_ring(r, lon, lat) for r in polygon) % 2 == 1:
                return True
        return False

    def polygons(self) -> list[list[list[list[float]]]]:
        return [[[[x, y] for x, y in (*ring, ring[0])] for ring in polygon] for polygon in self._polygons]


class Circle(Area):
    def __init__(self, lon: float, lat: float, radius_m: float) -> None:
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"centre [{lon}, {lat}] out of range (GeoJSON positions are [longitude, latitude])")
        self.lon, self.lat, self.radius_m = lon, lat, radius_m
        dlat = math.degrees(radius_m / EARTH_RADIUS_M)
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        self.bbox = BoundingBox(
            max(-180.0, lon - dlon), max(-90.0, lat - dlat), min(180.0, lon + dlon), min(90.0, lat + dlat)
        )

    def contains(self, lon: float, lat: float) -> bool:
        return self.bbox.contains(lon, lat) and distance_m(self.lon, self.lat, lon, lat) <= self.radius_m

    def polygons(self) -> list[list[list[list[float]]]]:
        """A polygon of :data:`CIRCLE_VERTICES` corners on the circle (counter-clockwise)."""
        ring = []
        for i in range(CIRCLE_VERTICES):
            bearing = 2 * math.pi * i / CIRCLE_VERTICES
            ring.append(_destination(self.lon, self.lat, bearing, self.radius_m))
        ring.append(ring[0])
        return [[[[round(x, 7), round(y, 7)] for x, y in ring]]]


def _destination(lon: float, lat: float, bearing: float, metres: float) -> tuple[float, float]:
    d = metres / EARTH_RADIUS_M
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    l2 = l1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(l2), math.degrees(p2)


def area_of(geometry: PolygonGeometry | MultiPolygonGeometry | PointGeometry) -> Area:
    """The area of a zone's geometry; ValueError says what is wrong with it."""
    if isinstance(geometry, PointGeometry):
        lon, lat = geometry.coordinates[0], geometry.coordinates[1]
        return Circle(lon, lat, geometry.radius_m)
    if isinstance(geometry, PolygonGeometry):
        return Polygons([geometry.coordinates])
    return Polygons(geometry.coordinates)
