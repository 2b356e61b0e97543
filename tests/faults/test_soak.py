"""The soak of ``bench/soak.py``, short (~20 s): a real ``locktwin run segway`` under mixed commands
and signed pushes keeps its resident memory (< 10 % growth after warm-up) and its descriptors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import FD_ALLOWANCE, RSS_GROWTH_LIMIT, VENDOR_POOL_LIMIT, soak
from tests.faults.common import log

pytestmark = pytest.mark.anyio


async def test_short_soak(mqtt_broker: str, tmp_path: Path) -> None:
    result = await soak(broker_url=mqtt_broker, workdir=tmp_path, seconds=20, devices=20, rate=20, warmup=0.35)
    log(result.summary())
    assert result.alive
    assert result.unanswered == 0, result.outcomes
    assert result.commands > 100 and result.pushes > 100
    assert result.rss_growth < RSS_GROWTH_LIMIT, result.summary()
    assert result.fds_end <= result.fds_after_warmup + FD_ALLOWANCE, result.summary()
    assert result.vendor_connections_end <= VENDOR_POOL_LIMIT, result.summary()
