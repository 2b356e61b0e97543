"""Compile a filter against the index and run it: candidates from the index's sets and sorted lists,
tests on the survivors, then a sort and a page.

The plan: every term that the index can answer with a set (vendor, lock, online, held, pending,
zone) or a range of a sorted list (battery, age) is a candidate source with a known size; the
smallest is materialised, the other sets are intersected in C, and the remaining terms test each
surviving record. The total is exact. A page of the default order (vendor/device), of battery or of
age walks the index's own ordered structure when the matches are dense enough that a walk finds the
page sooner than sorting them all; otherwise the matches are sorted.
"""

from __future__ import annotations

import base64
import fnmatch
import operator
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.messages import LockState
from twin.fleet.geo import BoundingBox, Circle, distance_m
from twin.fleet.index import DeviceRecord, FleetIndex
from twin.fleet.query import QueryError, Term, parse_duration, parse_filter, parse_sort

__all__ = ["FIELDS", "Page", "Search", "render_row"]

#: the fields every device may have (plus the scalar values the index has seen in states)
FIELDS = (
    "vendor",
    "id",
    "model",
    "lock",
    "online",
    "battery",
    "age",
    "held",
    "pending",
    "zone",
    "bbox",
    "near",
    "latitude",
    "longitude",
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})
_GLOB = re.compile(r"[*?\[]")
_NUMBER_TYPES = frozenset({int, float})
_SORTS = ("id", "vendor", "device", "battery", "age", "updated_at", "lock", "online")


@dataclass
class _Clause:
    """One compiled term: a candidate set (with its size), a test of a record, or both."""

    sets: list[set[str]] = field(default_factory=list)
    negate: bool = False
    test: Callable[[DeviceRecord], bool] | None = None
    #: False: the sets hold a superset of the matches (grid cells), the test decides
    exact: bool = True
    #: a lazily materialised range of a sorted list: (size, make)
    ranged: tuple[int, Callable[[], set[str]]] | None = None

    def size(self) -> int | None:
        if self.ranged is not None:
            return self.ranged[0]
        if self.sets and not self.negate:
            return sum(len(s) for s in self.sets)
        return None

    def candidates(self) -> set[str]:
        if self.ranged is not None:
            return self.ranged[1]()
        if len(self.sets) == 1:
            return set(self.sets[0])
        return set().union(*self.sets)


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[DeviceRecord]
    next_cursor: str | None
    took_ms: float


def _bool(term: Term) -> bool:
    if term.op not in ("=", "!="):
        raise term.fail(f"{term.name!r} takes = or != with true or false", at_value=False)
    if len(term.values) != 1 or term.values[0].lower() not in _TRUE | _FALSE:
        raise term.fail(f"{term.name!r} takes true or false, not {','.join(term.values)[:64]!r}")
    value = term.values[0].lower() in _TRUE
    return value if term.op == "=" else not value


def _float(term: Term, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise term.fail(f"{term.name!r} needs a number, not {raw[:64]!r}") from None


def _floats(term: Term, count: int, shape: str) -> list[float]:
    if term.op != "=":
        raise term.fail(f"{term.name!r} takes = ({term.name}={shape})", at_value=False)
    if len(term.values) != count:
        raise term.fail(f"{term.name!r} takes {shape}")
    return [_float(term, v) for v in term.values]


def _matcher(term: Term) -> Callable[[str | None], bool]:
    """= / != over text with alternatives and globs."""
    if term.op not in ("=", "!="):
        raise term.fail(f"{term.op!r} does not apply to {term.name!r} (text: = or !=)", at_value=False)
    exact = {v for v in term.values if not _GLOB.search(v)}
    globs = [re.compile(fnmatch.translate(v)) for v in term.values if _GLOB.search(v)]

    def matches(value: str | None) -> bool:
        if value is None:
            return False
        return value in exact or any(g.match(value) for g in globs)

    if term.op == "=":
        return matches
    return lambda value: not matches(value)


class Search:
    """Queries over one index (``now`` is injectable for the age of reports)."""

    def __init__(self, *, index: FleetIndex, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.clock = clock

    # -- compile ---------------------------------------------------------------------------------
    def compile(self, text: str) -> list[_Clause]:
        return [self._clause(term) for term in parse_filter(text)]

    def _clause(self, term: Term) -> _Clause:
        ix = self.index
        name = term.name
        if name == "vendor":
            if term.op in ("=", "!=") and not any(_GLOB.search(v) for v in term.values):
                return _Clause(sets=[ix.by_vendor.get(v, set()) for v in term.values], negate=term.op == "!=")
            match = _matcher(term)
            return _Clause(test=lambda r: match(r.vendor))
        if name in ("id", "device"):
            match = _matcher(term)
            if term.op == "=" and not any(_GLOB.search(v) for v in term.values):
                keys = {f"{v}/{d}" for v in ix.by_vendor for d in term.values} & ix.records.keys()
                return _Clause(sets=[keys], test=lambda r: match(r.device))
            if (
                term.op == "="
                and all(_GLOB.search(v) is None for v in (p[:-1] for p in term.values if p[-1] == "*"))
                and all(v.endswith("*") for v in term.values)
            ):
                # prefixes (id=SIM00*): ranges of the ordered keys, per vendor
                found = set()
                for vendor in ix.by_vendor:
                    for value in term.values:
                        low = f"{vendor}/{value[:-1]}"
                        found.update(ix.ordered.irange(low, low + "\U0010ffff"))
                return _Clause(sets=[found])
            return _Clause(test=lambda r: match(r.device))
        if name == "model":
            match = _matcher(term)
            return _Clause(test=lambda r: match(r.model))
        if name == "lock":
            if term.op not in ("=", "!="):
                raise term.fail("'lock' takes = or !=", at_value=False)
            states = []
            for raw in term.values:
                value = raw.upper()
                if value not in LockState.__members__:
                    raise term.fail(f"'lock' takes one of {', '.join(LockState.__members__)}, not {raw[:64]!r}")
                states.append(value)
            return _Clause(sets=[ix.by_lock.get(s, set()) for s in states], negate=term.op == "!=")
        if name in ("online", "held", "pending"):
            flag = _bool(term)
            if name == "online":
                return _Clause(sets=[ix.by_online[flag]])
            source = ix.held if name == "held" else ix.pending
            return _Clause(sets=[source], negate=not flag)
        if name == "zone":
            if term.op not in ("=", "!="):
                raise term.fail("'zone' takes = or !=", at_value=False)
            for zone in term.values:
                if zone not in ix.areas:
                    known = ", ".join(sorted(ix.areas)) or "none yet"
                    raise term.fail(f"unknown zone {zone[:64]!r} (zones: {known})")
            return _Clause(sets=[ix.by_zone.get(z, set()) for z in term.values], negate=term.op == "!=")
        if name == "bbox":
            west, south, east, north = _floats(term, 4, "west,south,east,north")
            try:
                box = BoundingBox(west, south, east, north)
            except ValueError as exc:
                raise term.fail(str(exc)) from None
            return _Clause(
                sets=[ix.within(box)],
                exact=False,
                test=lambda r: (
                    r.longitude is not None and r.latitude is not None and box.contains(r.longitude, r.latitude)
                ),
            )
        if name == "near":
            lon, lat, radius = _floats(term, 3, "longitude,latitude,metres")
            if not (-180 <= lon <= 180 and -90 <= lat <= 90) or radius <= 0:
                raise term.fail("'near' takes longitude,latitude,metres (longitude first, a radius above 0)")
            return _Clause(
                sets=[ix.within(Circle(lon, lat, radius).bbox)],
                exact=False,
                test=lambda r: (
                    r.longitude is not None
                    and r.latitude is not None
                    and distance_m(lon, lat, r.longitude, r.latitude) <= radius
                ),
            )
        if name == "age":
            if len(term.values) != 1:
                raise term.fail("'age' takes one duration")
            seconds = parse_duration(term.values[0])
            if seconds is None:
                raise term.fail(f"'age' takes a duration such as 90s, 5m, 1h or 2d, not {term.values[0][:64]!r}")
            # age op D  <=>  updated_at (reverse op) now - D
            reverse = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}[term.op]
            return self._numeric(ix.reported, "updated_at", reverse, self.clock() - seconds)
        if name == "battery":
            if len(term.values) != 1:
                raise term.fail("'battery' takes one number")
            return self._numeric(ix.battery, "battery", term.op, _float(term, term.values[0]))
        if name in ("latitude", "longitude") or name in ix.value_names:
            return self._value(term)
        known = ", ".join([*FIELDS, *sorted(ix.value_names)])
        raise term.fail(f"unknown field {name[:64]!r} (fields: {known})", at_value=False)

    def _numeric(self, ordered: Any, attr: str, op: str, bound: float) -> _Clause:
        compare = _COMPARE[op]

        def test(r: DeviceRecord) -> bool:
            value = r.value(attr)
            return value is not None and compare(value, bound)

        if op == "!=":
            return _Clause(test=test)
        lo, hi = 0, len(ordered)
        if op in ("<", "<="):
            hi = ordered.bisect_left((bound, "")) if op == "<" else ordered.bisect_right((bound, "\U0010ffff"))
        elif op in (">", ">="):
            lo = ordered.bisect_right((bound, "\U0010ffff")) if op == ">" else ordered.bisect_left((bound, ""))
        else:
            lo, hi = ordered.bisect_left((bound, "")), ordered.bisect_right((bound, "\U0010ffff"))
        return _Clause(test=test, ranged=(max(0, hi - lo), lambda: {k for _, k in ordered.islice(lo, hi)}))

    def _value(self, term: Term) -> _Clause:
        name = term.name
        numbers = [self._maybe_float(v) for v in term.values]
        if all(n is not None for n in numbers):
            compare = _COMPARE[term.op]
            ranged = term.op != "!=" and len(numbers) == 1 and name not in ("latitude", "longitude")
            if term.op in ("=", "!=") and not ranged:
                wanted = set(numbers)
                equal = term.op == "="

                def test_numbers(r: DeviceRecord) -> bool:
                    value = getattr(r, name) if name in ("latitude", "longitude") else r.values.get(name)
                    inside = type(value) in _NUMBER_TYPES and value in wanted
                    return inside if equal else not inside

                return _Clause(test=test_numbers)
            bound = numbers[0]
            if name in ("latitude", "longitude"):
                return _Clause(test=lambda r: (v := getattr(r, name)) is not None and compare(v, bound))
            assert bound is not None
            clause = self._numeric(self.index.sorted_by(name), name, term.op, bound)
            clause.test = lambda r: type(v := r.values.get(name)) in _NUMBER_TYPES and compare(v, bound)
            return clause
        if term.op not in ("=", "!="):
            raise term.fail(f"{term.name!r} needs a number with {term.op!r}")
        if len(term.values) == 1 and term.values[0].lower() in _TRUE | _FALSE:
            flag = _bool(term)
            return _Clause(test=lambda r: r.value(name) is flag)
        match = _matcher(term)
        return _Clause(test=lambda r: match(v if isinstance(v := r.value(name), str) else None))

    @staticmethod
    def _maybe_float(raw: str) -> float | None:
        try:
            return float(raw)
        except ValueError:
            return None

    # -- run -------------------------------------------------------------------------------------
    def matches(self, text: str) -> set[str]:
        """Keys of every listed device the filter selects."""
        return self._filter(self.compile(text))

    def _filter(self, clauses: list[_Clause]) -> set[str]:
        ix = self.index
        sized = [(size, i) for i, c in enumerate(clauses) if (size := c.size()) is not None]
        if sized:
            _, first = min(sized)
            keys = clauses[first].candidates()
        else:
            first = -1
            keys = set(ix.records)
        keys -= ix.unlisted
        tests = []
        for i, clause in enumerate(clauses):
            if i == first:
                if not clause.exact and clause.test is not None:
                    tests.append(clause.test)
                continue
            if clause.sets and clause.ranged is None:
                union = clause.sets[0] if len(clause.sets) == 1 else set().union(*clause.sets)
                if clause.negate:
                    keys -= union
                else:
                    keys &= union
                if not clause.exact and clause.test is not None:
                    tests.append(clause.test)
            elif clause.test is not None:
                tests.append(clause.test)
        if tests and keys:
            records = ix.records
            if len(tests) == 1:
                [only] = tests
                keys = {k for k in keys if only(records[k])}
            else:
                keys = {k for k in keys if all(t(records[k]) for t in tests)}
        return keys

    def page(
        self,
        text: str,
        *,
        sort: str | None = None,
        limit: int = 100,
        page: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        started = time.perf_counter()
        clauses = self.compile(text)
        name, descending = parse_sort(sort)
        if name == "age":  # youngest first is the newest report first
            name, descending = "updated_at", not descending
        if name not in _SORTS and name not in self.index.value_names:
            raise QueryError(f"cannot sort by {name!r} (sort by {', '.join(_SORTS)} or a state value)", 1)
        keys = self._filter(clauses)
        after = _decode_cursor(cursor, name, descending) if cursor else None
        skip = (page or 0) * limit if after is None else 0
        rows = self._ordered(keys, name, descending, after, skip, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(name, descending, self._sort_key(rows[-1], name, descending)) if more else None
        return Page(total=len(keys), rows=rows, next_cursor=next_cursor, took_ms=(time.perf_counter() - started) * 1000)

    def _sort_key(self, rec: DeviceRecord, name: str, descending: bool) -> tuple[Any, ...]:
        if name in ("id", "vendor", "device"):
            return (0, rec.key)
        value = self._sort_value(rec, name)
        present = value is not None
        # missing values last in both directions (reverse sorting flips the flag's meaning)
        return ((1 if present else 0) if descending else (0 if present else 1), value if present else 0, rec.key)

    def _sort_value(self, rec: DeviceRecord, name: str) -> Any:
        value = rec.value(name)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None if not isinstance(value, bool) else int(value)
        return value

    def _ordered(
        self, keys: set[str], name: str, descending: bool, after: tuple[Any, ...] | None, skip: int, need: int
    ) -> list[DeviceRecord]:
        records = self.index.records

        def later(rec: DeviceRecord) -> bool:
            key = self._sort_key(rec, name, descending)
            return after is None or (key < after if descending else key > after)

        # a walk of an ordered structure meets (skip + need) * N / R devices to find its page if the
        # matches are spread evenly, and sorting the R matches costs about R log R: walk when they are
        # that dense, and sort after all when the walk meets too many others (the filter ranges over
        # the sort field, say: battery<30 sorted by -battery starts among the full batteries)
        walked = self._walk(name, descending, after)
        if walked is not None and (skip + need) * len(records) <= 4 * len(keys) * len(keys):
            out: list[DeviceRecord] = []
            budget, skip_first = 4 * len(keys) + 1000, skip
            for key in walked:
                budget -= 1
                if budget < 0:
                    break
                if key not in keys:
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(records[key])
                if len(out) >= need:
                    return out
            else:
                if name in ("id", "vendor", "device"):
                    return out
                # the walk covers the devices that have the value; those without it come last, by key
                missing = sorted((k for k in keys if self._sort_value(records[k], name) is None), reverse=descending)
                rest = [records[k] for k in missing if later(records[k])]
                return out + rest[skip : skip + need - len(out)]
            skip = skip_first
        chosen = [records[k] for k in keys]
        chosen.sort(key=lambda r: self._sort_key(r, name, descending), reverse=descending)
        if after is not None:
            chosen = [r for r in chosen if later(r)]
        return chosen[skip : skip + need]

    def _walk(self, name: str, descending: bool, after: tuple[Any, ...] | None) -> Iterator[str] | None:
        """Every key after ``after`` in the order of one of the index's structures (None: there is none)."""
        ix = self.index
        if name in ("id", "vendor", "device"):
            ordered = ix.ordered
            if descending:
                stop = len(ordered) if after is None else ordered.bisect_left(after[1])
                return (k for k in ordered.islice(0, stop, reverse=True))
            start = 0 if after is None else ordered.bisect_right(after[1])
            return (k for k in ordered.islice(start))
        if name not in ("battery", "updated_at"):
            return None
        pairs = ix.battery if name == "battery" else ix.reported
        reverse = descending
        if after is None:
            start = len(pairs) if reverse else 0
        elif after[0] == (1 if descending else 0):  # the cursor is a device with a value
            pivot = (after[1], after[2])
            start = pairs.bisect_left(pivot) if reverse else pairs.bisect_right(pivot)
        else:  # past every device with a value: only those without one are left
            return iter(())
        if reverse:
            return (k for _, k in pairs.islice(0, start, reverse=True))
        return (k for _, k in pairs.islice(start))


def _encode_cursor(name: str, descending: bool, key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([name, descending, list(key)])).decode().rstrip("=")


def _decode_cursor(cursor: str, name: str, descending: bool) -> tuple[Any, ...]:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        cname, cdesc, key = raw
        if cname != name or cdesc != descending or not isinstance(key, list):
            raise ValueError
        return tuple(key)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise QueryError("cursor does not belong to this sort (pass next_cursor with the same sort)", 1) from None


def render_row(rec: DeviceRecord) -> dict[str, Any]:
    """A record as a :class:`~contracts.fleet.DeviceRow` document."""
    from twin.fleet.clock import iso

    return {
        "vendor": rec.vendor,
        "device": rec.device,
        "lock": rec.lock,
        "online": rec.online,
        "battery": rec.battery,
        "latitude": rec.latitude,
        "longitude": rec.longitude,
        "updated_at": None if rec.updated_at is None else iso(rec.updated_at),
        "held": rec.held,
        "pending": rec.pending,
        "zones": sorted(rec.zones),
        "model": rec.model,
        "values": rec.values,
    }
