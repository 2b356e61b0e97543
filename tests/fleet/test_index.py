"""The index, the filter language and the search, without a broker: positions of mistakes, every
kind of term, sorting and paging, geometry, schedules across daylight saving time."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import twin.fleet.index
import twin.fleet.query
import twin.fleet.search
import twin.fleet.terms
from contracts.fleet import DailySchedule, DeviceRow, PointGeometry, PolygonGeometry
from twin.fleet.geo import Circle, Polygons, area_of, distance_m
from twin.fleet.index import FleetIndex
from twin.fleet.query import QueryError, parse_duration, parse_filter
from twin.fleet.schedule import next_daily
from twin.fleet.search import Search, render_row

NOW = 1_800_000_000.0
SQUARE = [[[4.0, 52.0], [5.0, 52.0], [5.0, 53.0], [4.0, 53.0], [4.0, 52.0]]]


def state(**values: Any) -> dict[str, Any]:
    values.setdefault("lock", "LOCKED")
    values.setdefault("updated_at", datetime.fromtimestamp(NOW - values.pop("age", 0), UTC).isoformat())
    return values


@pytest.fixture
def search() -> Search:
    index = FleetIndex()
    index.put_area("square", Polygons([SQUARE]))
    rows = [
        ("okai", "861001", state(battery=15, online=True, latitude=52.5, longitude=4.5, speed=0.0)),
        ("okai", "861002", state(lock="UNLOCKED", battery=80, online=True, latitude=52.5, longitude=4.6, speed=12.5)),
        ("okai", "861003", state(battery=5, online=False, age=7200, latitude=10.0, longitude=10.0)),
        ("segway", "SN01", state(battery=55, online=True, latitude=52.51, longitude=4.51, charging=True)),
        ("segway", "SN02", state(lock="UNKNOWN", online=None)),
        ("tuya", "lock-1", state(battery=99, online=True, model_name="door")),
    ]
    for vendor, device, doc in rows:
        index.apply_state(vendor, device, doc)
    index.apply_twin("segway", "SN01", {"hold": "LOCKED", "command": None})
    index.apply_twin(
        "okai",
        "861001",
        {"command": {"transaction": "t", "kind": "set", "name": "lock", "value": "UNLOCKED", "status": "sent"}},
    )
    return Search(index=index, clock=lambda: NOW)


def found(search: Search, q: str, **kw: Any) -> list[str]:
    return [r.key for r in search.page(q, limit=100, **kw).rows]


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("battery<<20", 9, "one operator per term"),
        ("vendor=okai battery", 20, "expected an operator"),
        ("vendor=", 8, "expected a value"),
        ("Vendor=okai", 1, "expected a field name"),
        ('model="OKAI', 7, "unterminated quote"),
        ("vendor=okai,,segway", 8, "empty alternative"),
        ('"vendor=okai"x', 14, "a space after the closing quote"),
    ],
)
def test_parse_errors_name_the_position(text: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    assert caught.value.position == position and words in str(caught.value)
    assert f"at position {position}" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("lock=OPEN", 6, "'lock' takes one of"),
        ("vendor=okai batery<20", 13, "unknown field 'batery'"),
        ("online=maybe", 8, "true or false"),
        ("battery<lots", 9, "needs a number"),
        ("age>soon", 5, "a duration such as"),
        ("zone=nowhere", 6, "unknown zone 'nowhere' (zones: square)"),
        ("near=4.5,52.5", 6, "longitude,latitude,metres"),
        ("bbox=5,52,4,53", 6, "west <= east"),
        ("near=52.5,200,10", 6, "longitude first"),
        ("lock<LOCKED", 1, "'lock' takes = or !="),
    ],
)
def test_compile_errors_name_the_position(search: Search, text: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        search.compile(text)
    assert caught.value.position == position and words in str(caught.value), str(caught.value)


def test_terms(search: Search) -> None:
    assert found(search, "vendor=okai lock=LOCKED") == ["okai/861001", "okai/861003"]
    assert found(search, "vendor!=okai") == ["segway/SN01", "segway/SN02", "tuya/lock-1"]
    assert found(search, "vendor=seg*") == ["segway/SN01", "segway/SN02"]
    assert found(search, "id=861*") == ["okai/861001", "okai/861002", "okai/861003"]
    assert found(search, "id=SN01,lock-1") == ["segway/SN01", "tuya/lock-1"]
    assert found(search, "id=*-?") == ["tuya/lock-1"]
    assert found(search, "battery<20") == ["okai/861001", "okai/861003"]
    assert found(search, "battery>=55 battery<=99") == ["okai/861002", "segway/SN01", "tuya/lock-1"]
    assert found(search, "battery=80") == ["okai/861002"]
    assert found(search, "battery!=80 vendor=okai") == ["okai/861001", "okai/861003"]
    assert found(search, "online=false") == ["okai/861003"]
    assert found(search, "online=true lock!=LOCKED") == ["okai/861002"]
    assert found(search, "age>1h") == ["okai/861003"]
    assert found(search, "age<=90s vendor=okai") == ["okai/861001", "okai/861002"]
    assert found(search, "held=true") == ["segway/SN01"]
    assert found(search, "pending=true") == ["okai/861001"]
    assert "okai/861001" not in found(search, "pending=false")
    assert found(search, "zone=square") == ["okai/861001", "okai/861002", "segway/SN01"]
    assert found(search, "zone!=square vendor=okai") == ["okai/861003"]
    assert found(search, "bbox=4.55,52.4,4.7,52.6") == ["okai/861002"]
    assert found(search, "near=4.5,52.5,1500") == ["okai/861001", "segway/SN01"]
    assert found(search, "speed>0") == ["okai/861002"]
    assert found(search, "speed=0") == ["okai/861001"]
    assert found(search, "charging=true") == ["segway/SN01"]
    assert found(search, '"model_name=door"') == ["tuya/lock-1"]
    assert found(search, "latitude>52.505") == ["segway/SN01"]
    assert search.page("").total == 6


def test_sort_and_pages(search: Search) -> None:
    assert [r.battery for r in search.page("", sort="-battery").rows] == [99, 80, 55, 15, 5, None]
    assert [r.battery for r in search.page("", sort="battery").rows] == [5, 15, 55, 80, 99, None]
    assert search.page("", sort="-id").rows[0].key == "tuya/lock-1"
    assert [r.device for r in search.page("vendor=okai", sort="age").rows][-1] == "861003"
    for sort in (None, "-id", "battery", "-battery", "age", "-age", "speed", "lock"):
        walked, cursor = [], None
        while True:
            page = search.page("", sort=sort, limit=2, cursor=cursor)
            walked += [r.key for r in page.rows]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert walked == [r.key for r in search.page("", sort=sort, limit=100).rows], sort
        assert sorted(walked) == sorted(search.index.records)
        offsets = [r.key for n in range(3) for r in search.page("", sort=sort, limit=2, page=n).rows]
        assert offsets == walked, sort
    with pytest.raises(QueryError, match="cursor does not belong"):
        search.page("", sort="battery", cursor=search.page("", sort="-battery", limit=1).next_cursor)
    with pytest.raises(QueryError, match="cannot sort by"):
        search.page("", sort="colour")


def test_large_index_pages_agree_with_a_plain_sort() -> None:
    rng = random.Random(7)
    index = FleetIndex()
    for i in range(3000):
        index.apply_state(
            rng.choice(["a", "b"]),
            f"d{i:05d}",
            state(
                battery=rng.choice([None, *range(0, 101, 5)]),
                age=rng.uniform(0, 9000),
                lock=rng.choice(["LOCKED", "UNLOCKED"]),
            ),
        )
    search = Search(index=index, clock=lambda: NOW)
    for sort in ("battery", "-battery", "age", "-age", None):
        expected = [r.key for r in search.page("lock=LOCKED", sort=sort, limit=5000).rows]
        walked, cursor = [], None
        for _ in range(100):
            page = search.page("lock=LOCKED", sort=sort, limit=97, cursor=cursor)
            walked += [r.key for r in page.rows]
            if (cursor := page.next_cursor) is None:
                break
        assert walked == expected and len(set(walked)) == search.page("lock=LOCKED").total, sort


def test_index_follows_changes_and_device_lists() -> None:
    index = FleetIndex()
    index.put_area("square", Polygons([SQUARE]))
    change = index.apply_state("okai", "x", state(battery=50, latitude=52.5, longitude=4.5))
    assert change.entered == ("square",) and change.moved
    change = index.apply_state("okai", "x", state(lock="UNLOCKED", battery=40, latitude=60.0, longitude=4.5))
    assert change.left == ("square",) and change.lock_changed and change.lock_before == "LOCKED"
    assert index.by_lock["UNLOCKED"] == {"okai/x"} and not index.by_lock["LOCKED"]
    assert list(index.battery) == [(40.0, "okai/x")]
    index.apply_device_list(
        "okai",
        "0-of-2",
        0,
        1,
        [{"id": "y", "model": "OKAI scooter", "capabilities": ["lock"], "actions": [], "desired_fields": ["lock"]}],
    )
    assert index.unlisted == {"okai/x"} and index.records["okai/y"].capabilities == {"lock", "set:lock"}
    index.apply_device_list("okai", "1-of-2", 0, 1, [{"id": "x"}])
    assert index.unlisted == set()
    assert index.apply_state("okai", "x", None).removed and "okai/x" not in index.records
    assert list(index.battery) == [] and index.by_zone["square"] == set()
    row = render_row(index.records["okai/y"])
    DeviceRow.model_validate(row)


def test_geometry() -> None:
    holed = Polygons([[*SQUARE, [[4.4, 52.4], [4.6, 52.4], [4.6, 52.6], [4.4, 52.6], [4.4, 52.4]]]])
    assert holed.contains(4.2, 52.2) and not holed.contains(4.5, 52.5) and not holed.contains(6.0, 52.5)
    circle = area_of(PointGeometry(type="Point", coordinates=[4.9, 52.37], radius_m=100))
    assert isinstance(circle, Circle)
    assert circle.contains(4.9, 52.3705) and not circle.contains(4.9, 52.372)
    ring = circle.polygons()[0][0]
    assert len(ring) == 65 and ring[0] == ring[-1]
    assert all(abs(distance_m(4.9, 52.37, lon, lat) - 100) < 0.5 for lon, lat in ring)
    assert Polygons([SQUARE]).polygons() == [SQUARE]
    with pytest.raises(ValueError, match="closed"):
        area_of(PolygonGeometry(type="Polygon", coordinates=[[[4, 52], [5, 52], [5, 53], [4, 53]]]))
    with pytest.raises(ValueError, match="longitude, latitude"):
        area_of(PolygonGeometry(type="Polygon", coordinates=[[[52, 4], [52, 200], [53, 5], [52, 4]]]))
    assert round(distance_m(0, 0, 0, 1)) == 111195


def test_daily_schedule_across_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")

    def next_at(daily: str, after: datetime) -> datetime:
        return datetime.fromtimestamp(
            next_daily(DailySchedule(daily=daily, tz="Europe/Berlin"), after.timestamp()), berlin
        )

    assert next_at("23:00", datetime(2026, 3, 28, 12, tzinfo=berlin)) == datetime(2026, 3, 28, 23, tzinfo=berlin)
    assert next_at("23:00", datetime(2026, 3, 28, 23, tzinfo=berlin)) == datetime(2026, 3, 29, 23, tzinfo=berlin)
    assert next_at("23:00", datetime(2026, 3, 29, 23, tzinfo=berlin)).utcoffset().total_seconds() == 7200  # type: ignore[union-attr]
    # 02:30 does not exist on 2026-03-29 (clocks jump 02:00 -> 03:00): it runs once, at 03:30
    spring = next_at("02:30", datetime(2026, 3, 29, 0, tzinfo=berlin))
    assert (spring.day, spring.hour, spring.minute) == (29, 3, 30)
    # 02:30 happens twice on 2026-10-25: the first one only, then the next day
    fall = next_at("02:30", datetime(2026, 10, 25, 0, tzinfo=berlin))
    assert fall.utcoffset().total_seconds() == 7200  # type: ignore[union-attr]
    after = next_at("02:30", fall)
    assert (after.day, after.hour) == (26, 2)
    assert parse_duration("90") == 90 and parse_duration("1.5h") == 5400 and parse_duration("2w") is None
    with pytest.raises(ValueError, match="HH:MM"):
        DailySchedule(daily="25:00")
    with pytest.raises(ValueError, match="unknown time zone"):
        DailySchedule(daily="23:00", tz="Mars/Olympus")


def test_public_surfaces() -> None:
    assert twin.fleet.index.__all__ == ["Change", "CommandView", "DeviceRecord", "FleetIndex", "device_key"]
    assert twin.fleet.query.__all__ == [
        "OPERATORS",
        "QueryError",
        "Term",
        "parse_duration",
        "parse_filter",
        "parse_sort",
    ]
    assert twin.fleet.search.__all__ == ["FIELDS", "Page", "Search", "render_row"]
    assert twin.fleet.terms.__all__ == ["FIELDS", "Clause", "Compiler"]
