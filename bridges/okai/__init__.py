"""OKAI scooters (OKAI PaaS API) for locktwin."""

from __future__ import annotations

from bridges.okai.adapter import OkaiAdapter
from bridges.okai.client import OkaiClient
from bridges.okai.settings import OkaiSettings

__all__ = ["OkaiAdapter", "OkaiClient", "OkaiSettings"]
