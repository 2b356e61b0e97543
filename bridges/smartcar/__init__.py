"""Smartcar vehicles as lock twins: the adapter, its settings and a faithful simulator (``.simulator``)."""

from __future__ import annotations

from .adapter import SmartcarAdapter
from .settings import SmartcarSettings

__all__ = ["SmartcarAdapter", "SmartcarSettings"]
