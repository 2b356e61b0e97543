"""A faithful Tuya Cloud simulator (signatures, tokens, envelope, locks, users, cards)."""

from __future__ import annotations

from bridges.tuya.simulator.app import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PROJECT_ID,
    TuyaSimulator,
    serve_simulator,
)

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "DEFAULT_PROJECT_ID", "TuyaSimulator", "serve_simulator"]
