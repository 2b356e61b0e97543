"""Run a filter against the index: candidates from the index's sets and sorted lists, tests on the
survivors, then a sort and a page.

The plan: every term that the index can answer with a set (vendor, lock, online, held, pending,
zone, grid cells) or a range of a sorted list (battery, age, other numeric values) is a candidate
source with a known size (:mod:`twin.fleet.terms`); the smallest is materialised, the other sets are
intersected in C, and the remaining terms test each surviving record. The total is exact. A page of
the default order (vendor/device), of battery or of age walks the index's own ordered structure
when the matches are dense enough that a walk finds the page sooner than sorting them all;
otherwise the matches are sorted.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from twin.fleet.clock import iso
from twin.fleet.index import DeviceRecord, FleetIndex
from twin.fleet.query import QueryError, parse_sort
from twin.fleet.terms import FIELDS, Clause, Compiler

__all__ = ["FIELDS", "Page", "Search", "render_row"]

_SORTS = ("id", "vendor", "device", "battery", "age", "updated_at", "lock", "online")


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[DeviceRecord]
    next_cursor: str | None
    took_ms: float


class Search:
    """Queries over one index (``clock`` is injectable for the age of reports)."""

    def __init__(self, *, index: FleetIndex, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.clock = clock
        self._compiler = Compiler(index=index, clock=clock)

    def compile(self, text: str) -> list[Clause]:
        return self._compiler.compile(text)

    def matches(self, text: str) -> set[str]:
        """Keys of every listed device the filter selects."""
        return self._filter(self.compile(text))

    def _filter(self, clauses: list[Clause]) -> set[str]:
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
