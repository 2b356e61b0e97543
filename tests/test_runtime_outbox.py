"""The publish queue drops nothing while connected (a fleet's republish at start is larger than
OUTBOX_LIMIT) and keeps only the newest OUTBOX_LIMIT messages while the broker is away."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

import twin.runtime
from tests.fake_adapter import FakeAdapter
from twin.config import MqttSettings
from twin.runtime import BridgeRuntime


def test_outbox_limits_only_while_disconnected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twin.runtime, "OUTBOX_LIMIT", 3)
    runtime = BridgeRuntime(adapter=FakeAdapter(), mqtt=MqttSettings(), data_dir=tmp_path)
    runtime._connection = cast(Any, object())  # connected: every message waits for its publisher
    for i in range(10):
        runtime._send(f"t/{i}", b"x", retain=True)
    assert [m.topic for m in runtime._outbox] == [f"t/{i}" for i in range(10)]
    runtime._connection = None  # the broker went away: only the newest OUTBOX_LIMIT are kept
    runtime._send("t/10", b"x", retain=True)
    assert [m.topic for m in runtime._outbox] == ["t/8", "t/9", "t/10"]
