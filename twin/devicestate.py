"""What the engine keeps in memory of one device: its queue, its worker and its last observations."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from twin.adapter import DeviceInfo
from twin.store import CommandRecord

__all__ = ["DeviceState"]


@dataclass
class DeviceState:
    info: DeviceInfo
    #: set by the next observation; made only while someone waits for one (an idle anyio event
    #: costs ~0.9 KB, and a fleet has one of these per device)
    reported_changed: anyio.Event | None = None
    confirmed_by: str | None = None
    refuted: tuple[str, str] | None = None  # (command id, why)
    current: CommandRecord | None = None
    #: open top-level commands in acceptance order (the store holds the same, for a restart); the
    #: worker, intake and outcome share these objects, so a command superseded while its worker
    #: waits to retry is seen as superseded by that worker
    queue: list[CommandRecord] = field(default_factory=list)
    #: set when the command waiting out its retry backoff was superseded (exists only meanwhile)
    wake_retry: anyio.Event | None = None
    worker_running: bool = False
    watermark: dict[str, float] = field(default_factory=dict)
    #: when (monotonic) an observation of the device last came in, by any means
    observed: float | None = None
