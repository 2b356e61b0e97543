"""Terms of the filter language compiled against the index: each a candidate set (with its size), a
range of one of the index's sorted lists, a test of a record, or a set and a test.

Which fields exist and what their values mean is checked here, with the position of the mistake:
the names of :data:`FIELDS`, and the scalar values the index has seen in states.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contracts.messages import LockState
from twin.fleet.geo import BoundingBox, Circle, distance_m
from twin.fleet.index import DeviceRecord, FleetIndex
from twin.fleet.query import Term, parse_duration, parse_filter

__all__ = ["FIELDS", "Clause", "Compiler"]

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


@dataclass
class Clause:
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


class Compiler:
    """Compiles filters against one index (``clock``: now, for the age of reports)."""

    def __init__(self, *, index: FleetIndex, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.clock = clock

    def compile(self, text: str) -> list[Clause]:
        """The clauses of a filter; QueryError names the position of a mistake."""
        return [self._clause(term) for term in parse_filter(text)]

    def _clause(self, term: Term) -> Clause:
        ix = self.index
        name = term.name
        if name == "vendor":
            if term.op in ("=", "!=") and not any(_GLOB.search(v) for v in term.values):
                return Clause(sets=[ix.by_vendor.get(v, set()) for v in term.values], negate=term.op == "!=")
            match = _matcher(term)
            return Clause(test=lambda r: match(r.vendor))
        if name in ("id", "device"):
            match = _matcher(term)
            if term.op == "=" and not any(_GLOB.search(v) for v in term.values):
                keys = {f"{v}/{d}" for v in ix.by_vendor for d in term.values} & ix.records.keys()
                return Clause(sets=[keys], test=lambda r: match(r.device))
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
                return Clause(sets=[found])
            return Clause(test=lambda r: match(r.device))
        if name == "model":
            match = _matcher(term)
            return Clause(test=lambda r: match(r.model))
        if name == "lock":
            if term.op not in ("=", "!="):
                raise term.fail("'lock' takes = or !=", at_value=False)
            states = []
            for raw in term.values:
                value = raw.upper()
                if value not in LockState.__members__:
                    raise term.fail(f"'lock' takes one of {', '.join(LockState.__members__)}, not {raw[:64]!r}")
                states.append(value)
            return Clause(sets=[ix.by_lock.get(s, set()) for s in states], negate=term.op == "!=")
        if name in ("online", "held", "pending"):
            flag = _bool(term)
            if name == "online":
                return Clause(sets=[ix.by_online[flag]])
            source = ix.held if name == "held" else ix.pending
            return Clause(sets=[source], negate=not flag)
        if name == "zone":
            if term.op not in ("=", "!="):
                raise term.fail("'zone' takes = or !=", at_value=False)
            for zone in term.values:
                if zone not in ix.areas:
                    known = ", ".join(sorted(ix.areas)) or "none yet"
                    raise term.fail(f"unknown zone {zone[:64]!r} (zones: {known})")
            return Clause(sets=[ix.by_zone.get(z, set()) for z in term.values], negate=term.op == "!=")
        if name == "bbox":
            west, south, east, north = _floats(term, 4, "west,south,east,north")
            try:
                box = BoundingBox(west, south, east, north)
            except ValueError as exc:
                raise term.fail(str(exc)) from None
            return Clause(
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
            return Clause(
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

    def _numeric(self, ordered: Any, attr: str, op: str, bound: float) -> Clause:
        compare = _COMPARE[op]

        def test(r: DeviceRecord) -> bool:
            value = r.value(attr)
            return value is not None and compare(value, bound)

        if op == "!=":
            return Clause(test=test)
        lo, hi = 0, len(ordered)
        if op in ("<", "<="):
            hi = ordered.bisect_left((bound, "")) if op == "<" else ordered.bisect_right((bound, "\U0010ffff"))
        elif op in (">", ">="):
            lo = ordered.bisect_right((bound, "\U0010ffff")) if op == ">" else ordered.bisect_left((bound, ""))
        else:
            lo, hi = ordered.bisect_left((bound, "")), ordered.bisect_right((bound, "\U0010ffff"))
        return Clause(test=test, ranged=(max(0, hi - lo), lambda: {k for _, k in ordered.islice(lo, hi)}))

    def _value(self, term: Term) -> Clause:
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

                return Clause(test=test_numbers)
            bound = numbers[0]
            if name in ("latitude", "longitude"):
                return Clause(test=lambda r: (v := getattr(r, name)) is not None and compare(v, bound))
            assert bound is not None
            clause = self._numeric(self.index.sorted_by(name), name, term.op, bound)
            clause.test = lambda r: type(v := r.values.get(name)) in _NUMBER_TYPES and compare(v, bound)
            return clause
        if term.op not in ("=", "!="):
            raise term.fail(f"{term.name!r} needs a number with {term.op!r}")
        if len(term.values) == 1 and term.values[0].lower() in _TRUE | _FALSE:
            flag = _bool(term)
            return Clause(test=lambda r: r.value(name) is flag)
        match = _matcher(term)
        return Clause(test=lambda r: match(v if isinstance(v := r.value(name), str) else None))

    @staticmethod
    def _maybe_float(raw: str) -> float | None:
        try:
            return float(raw)
        except ValueError:
            return None

    # -- run -------------------------------------------------------------------------------------
