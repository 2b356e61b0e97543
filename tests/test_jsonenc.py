"""twin.jsonenc writes the JSON the standard library wrote, orjson or not."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest

from twin.jsonenc import dumps, dumps_text


class Color(StrEnum):
    RED = "red"


WHEN = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        {"lock": "LOCKED", "version": 7, "at": 1.5, "nested": {"a": [1, None, True]}},
        {"name": "Tür 3 - 東京 🔒 \u2013"},
        {"color": Color.RED},
        {"when": WHEN},  # left in by a caller: str(), as json.dumps(default=str) did
        {1: "one", None: "none"},  # non-string keys become strings
        {"card": 2**70},  # beyond 64 bits: orjson refuses, the standard library writes it
        {"raw": b"\x00"},
        [],
        "plain",
    ],
)
def test_same_json_as_the_standard_library(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    assert dumps(value) == expected.encode()
    assert dumps_text(value) == expected


def test_a_non_finite_float_is_null_not_nan() -> None:
    assert not math.isfinite(float("nan"))
    assert json.loads(dumps({"x": float("nan")})) == {"x": None}
