"""Segway Discovery e-bikes (C80 API): client, adapter, push intake and a simulator."""

from __future__ import annotations

from bridges.segway.adapter import SegwayAdapter
from bridges.segway.client import SegwayClient
from bridges.segway.push import create_push_app
from bridges.segway.settings import SegwaySettings

__all__ = ["SegwayAdapter", "SegwayClient", "SegwaySettings", "create_push_app"]
