"""The fleet's filter language: parsing, with the position of every mistake.

A filter is terms separated by spaces, all of which must hold::

    vendor=okai lock=UNLOCKED battery<20 zone=old-town
    vendor=okai,segway id=8637*  online=false age>1h
    near=4.8952,52.3702,300 pending=false held=false
    bbox=4.88,52.36,4.91,52.38 "model=OKAI scooter"        (quote a term or a value with spaces)

A term is ``field op value`` with op one of ``= != < <= > >=``. ``=`` and ``!=`` take alternatives
separated by commas (``vendor=okai,segway``) and, on text fields, globs (``id=SIM00*``). Positions
in errors are 1-based character columns of the filter text. Which fields exist and what their
values mean is checked when the filter is compiled against the index (:mod:`twin.fleet.search`),
with the same positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["OPERATORS", "QueryError", "Term", "parse_duration", "parse_filter", "parse_sort"]

OPERATORS = ("<=", ">=", "!=", "=", "<", ">")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class QueryError(ValueError):
    """A filter that cannot be read; ``position`` is the 1-based column of the mistake."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Term:
    name: str
    op: str
    values: tuple[str, ...]
    #: 1-based columns of the term's field name and of its value
    position: int
    value_position: int

    def fail(self, message: str, *, at_value: bool = True) -> QueryError:
        return QueryError(message, self.value_position if at_value else self.position)


def parse_filter(text: str) -> list[Term]:
    """The terms of a filter; QueryError names the position of the first mistake."""
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        quoted = text[i] == '"'
        if quoted:
            end = text.find('"', i + 1)
            if end < 0:
                raise QueryError("unterminated quote", i + 1)
            terms.append(_term(text[i + 1 : end], i + 1))
            i = end + 1
            if i < n and not text[i].isspace():
                raise QueryError("expected a space after the closing quote", i + 1)
            continue
        start = i
        while i < n and not text[i].isspace():
            if text[i] == '"':  # field="a value with spaces"
                end = text.find('"', i + 1)
                if end < 0:
                    raise QueryError("unterminated quote", i + 1)
                i = end + 1
                continue
            i += 1
        terms.append(_term(text[start:i], start))
    return terms


def _term(raw: str, offset: int) -> Term:
    """One term; ``offset`` is the 0-based index of raw in the filter."""
    match = _NAME.match(raw)
    if match is None:
        what = f"{raw[0]!r}" if raw else "nothing"
        raise QueryError(f"expected a field name (lowercase letters, digits, _), found {what}", offset + 1)
    name = match.group(0)
    rest = raw[match.end() :]
    op = next((o for o in OPERATORS if rest.startswith(o)), None)
    if op is None:
        found = f"{rest[0]!r}" if rest else "the end of the term"
        raise QueryError(
            f"expected an operator (=, !=, <, <=, >, >=) after {name!r}, found {found}", offset + match.end() + 1
        )
    value_at = offset + match.end() + len(op)
    value = rest[len(op) :]
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value, value_at = value[1:-1], value_at + 1
    elif '"' in value:
        raise QueryError("a quote must enclose the whole value", value_at + value.index('"') + 1)
    if not value:
        raise QueryError(f"expected a value after {name + op!r}", value_at + 1)
    if value[0] in "=<>!":
        raise QueryError(f"unexpected {value[0]!r}: one operator per term", value_at + 1)
    values = tuple(value.split(",")) if op in ("=", "!=") else (value,)
    if any(v == "" for v in values):
        raise QueryError("empty alternative between commas", value_at + 1)
    return Term(name=name, op=op, values=values, position=offset + 1, value_position=value_at + 1)


def parse_duration(raw: str) -> float | None:
    """Seconds of ``90``, ``90s``, ``5m``, ``1.5h``, ``2d``; None when it is not a duration."""
    match = _DURATION.match(raw.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_sort(raw: str | None) -> tuple[str, bool]:
    """(field, descending) of ``battery`` or ``-battery``; default: vendor then device id."""
    if raw is None or not raw.strip():
        return "id", False
    text = raw.strip()
    descending = text.startswith("-")
    name = text.lstrip("-+")
    if not _NAME.fullmatch(name):
        raise QueryError(f"sort takes a field name, optionally with - for descending, not {raw[:64]!r}", 1)
    return name, descending
