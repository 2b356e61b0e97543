"""Stand-ins for what an adapter or a vendor client meets outside the runtime, for their own tests.

- :class:`RecordingSink`: the :class:`~twin.adapter.BridgeSink` an adapter is started with, which
  keeps every report and event, and the state they add up to (an older value never wins, as in the
  store);
- :func:`command_context`: the :class:`~twin.adapter.CommandContext` of a command the runtime
  would be running;
- :class:`FakeClock`: a clock a test moves by hand, for code that takes ``clock=`` (token lifetimes,
  timestamps), so that no test sleeps to let time pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contracts.messages import EventType
from twin.adapter import CommandContext, ReportedPatch

__all__ = ["FakeClock", "RecordingSink", "command_context"]


@dataclass
class RecordingSink:
    """A :class:`~twin.adapter.BridgeSink` that records what an adapter hands over.

    ``devices``: the devices the runtime knows (a report about another returns False, as the
    runtime's does); None: every device. ``fail_next``: that many reports raise first, as when the
    store is down.
    """

    data_dir: Path = Path("/nonexistent")
    devices: set[str] | None = None
    #: (device, patch, source) of every report taken
    reports: list[tuple[str, ReportedPatch, str]] = field(default_factory=list)
    events: list[tuple[str, EventType, dict[str, Any]]] = field(default_factory=list)
    #: what the reports add up to, per device: the newest value of each field
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    observed: dict[str, dict[str, datetime]] = field(default_factory=dict)
    fail_next: int = 0

    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("store is down")
        if self.devices is not None and device_id not in self.devices:
            return False
        self.reports.append((device_id, patch, source))
        state = self.state.setdefault(device_id, {})
        seen = self.observed.setdefault(device_id, {})
        for name, value in patch.values.items():
            when = patch.observed(name)
            if when is not None and name in seen and when < seen[name]:
                continue  # older than what is known: a late push never wins
            state[name] = value
            if when is not None:
                seen[name] = when
        return True

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        self.events.append((device_id, type, data))

    def patches(self, device_id: str) -> list[ReportedPatch]:
        """The patches reported about ``device_id``, oldest first."""
        return [patch for device, patch, _ in self.reports if device == device_id]

    @classmethod
    def of(cls, devices: Iterable[str], *, data_dir: Path = Path("/nonexistent")) -> RecordingSink:
        """A sink that knows only ``devices``."""
        return cls(data_dir=data_dir, devices=set(devices))


def command_context(
    device_id: str, name: str = "lock", *, seconds: float = 30.0, attempt: int = 1, transaction: str | None = None
) -> CommandContext:
    """The context of a command ``name`` on ``device_id`` that expires in ``seconds``."""
    return CommandContext(
        command_id=uuid.uuid4().hex,
        transaction=transaction,
        device_id=device_id,
        name=name,
        expires_at=datetime.now(UTC) + timedelta(seconds=seconds),
        attempt=attempt,
    )


class FakeClock:
    """Seconds that pass only when the test says so: ``clock()`` reads it, ``advance()`` moves it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
