"""JSON encoding of what locktwin publishes and stores: orjson, the standard library as a fallback.

A ``/set`` encodes about 25 values: its answers, events and documents, and the store's JSON columns.
orjson encodes them several times faster than ``json.dumps`` (Home Assistant switched for the same
reason); on the latency benchmark's command path this and the PUBACK shortcut in
:mod:`twin.publisher` took ~0.2 ms of CPU off ~3 ms per ``/set``. The output is the same compact JSON as
before, with two deliberate differences: UTF-8 instead of ``\\u`` escapes in stored columns, and
``null`` for a non-finite float (``json.dumps`` wrote ``NaN``, which is not JSON).

- a ``datetime`` left in a value goes through ``str`` as it did (``OPT_PASSTHROUGH_DATETIME``), and
  so does anything else orjson cannot encode (``default=str``);
- non-string keys become strings, as with ``json.dumps``;
- what orjson refuses outright (an integer beyond 64 bits, e.g. a card number sent as a number)
  falls back to the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (a payload)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def dumps_text(value: Any) -> str:
    """Compact JSON as text (a stored column)."""
    return dumps(value).decode()
