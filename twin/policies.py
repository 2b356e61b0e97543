"""Policies the engine applies to reported changes nobody asked for (drift)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from contracts.messages import DesiredLock, LockState
from twin.intake import CommandRequest

__all__ = ["HoldPolicy"]


@dataclass(frozen=True, kw_only=True)
class HoldPolicy:
    """Devices kept in a state: one that drifts to ``away`` on ``field`` is set back to ``restore``
    (the ``hold`` setting: doors that must stay locked)."""

    devices: frozenset[str] = frozenset()
    field: str = "lock"
    away: Any = LockState.UNLOCKED
    restore: Any = DesiredLock.LOCKED

    def holds(self, device: str) -> bool:
        return device in self.devices

    def restores(self, device: str, name: str, after: Any, *, capability: str) -> CommandRequest | None:
        """The command that sets ``name`` of ``device`` back after it drifted to ``after``, or None."""
        if name != self.field or after != self.away or device not in self.devices:
            return None
        return CommandRequest(
            kind="set",
            name=name,
            value=self.restore,
            transaction=f"hold-{uuid.uuid4().hex[:12]}",
            expires_in=None,
            issued_at=None,
            if_version=None,
            capability=capability,
            idempotent=True,
            sensitive=False,
        )
