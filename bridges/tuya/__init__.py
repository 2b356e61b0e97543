"""Tuya Cloud door locks: remote lock/unlock, lock users and door-lock cards."""

from __future__ import annotations

from bridges.tuya.adapter import TuyaAdapter
from bridges.tuya.cards import CardOperation, CardSpec, plan_cards
from bridges.tuya.client import TuyaClient
from bridges.tuya.settings import TuyaSettings

__all__ = ["CardOperation", "CardSpec", "TuyaAdapter", "TuyaClient", "TuyaSettings", "plan_cards"]
