"""Reported state: how a vendor's observation merges into a twin, as a pure function.

An observation (:class:`~twin.adapter.ReportedPatch`) carries values and, where the vendor gives
them, the time each was true. Merging it:

- drops fields the adapter declares secret (they never reach a topic or the store);
- drops a value older than what the twin already knows of that field (its *watermark*), so that a
  late push never overwrites newer state; a value without a vendor time counts as observed on
  arrival, and so does one whose vendor time is further ahead of ``now`` than ``max_ahead`` (a
  vendor clock gone wrong, or a forged date: a value dated a year ahead would otherwise hide every
  true observation after it until that date);
- records, for each value that changed, where it came from (``observed_at``, ``received_at``,
  ``source``): the twin's metadata.

Nothing here touches the store, the network or the clock: :func:`merge` is given ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.messages import DesiredLock, LockState
from twin.adapter import ReportedPatch
from twin.document import iso

__all__ = ["Merge", "merge", "watermarks"]


@dataclass
class Merge:
    """What an observation changes: the values (``from``, ``to``), their metadata, the watermarks."""

    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    watermark: dict[str, float] = field(default_factory=dict)
    #: fields whose vendor time was too far ahead: counted as received now
    clamped: list[str] = field(default_factory=list)

    def apply(self, reported: dict[str, Any], metadata: dict[str, Any], watermark: dict[str, float]) -> None:
        for name, (_, after) in self.changes.items():
            reported[name] = after
        metadata.update(self.metadata)
        watermark.update(self.watermark)


def watermarks(metadata: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The watermarks a twin's stored metadata proves (for a restart): per field, the vendor's time
    of its last change, else when it was received. Every true observation after that change said
    the same value, so an older one (a push replayed after a restart) must not win either."""
    out: dict[str, float] = {}
    for name, meta in metadata.items():
        stamp = meta.get("observed_at") or meta.get("received_at")
        if isinstance(stamp, str):
            try:
                out[name] = datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                continue
    return out


def merge(
    reported: Mapping[str, Any],
    patch: ReportedPatch,
    watermark: Mapping[str, float],
    *,
    now: float,
    source: str,
    secret_fields: frozenset[str] = frozenset(),
    max_ahead: float = float("inf"),
) -> Merge:
    """The changes ``patch`` makes to a twin whose reported state is ``reported``."""
    out = Merge()
    received: str | None = None
    for name, value in patch.values.items():
        if name in secret_fields:
            continue
        observed = patch.observed(name)
        observed_ts = observed.timestamp() if observed is not None else now
        if observed_ts > now + max_ahead:
            out.clamped.append(name)
            observed, observed_ts = iso(now), now
        if observed_ts < watermark.get(name, float("-inf")):
            continue  # older than what we already know: a late push never wins
        out.watermark[name] = observed_ts
        plain = value.value if isinstance(value, LockState | DesiredLock) else value
        before = reported.get(name)
        if before != plain:
            if received is None:
                received = iso(now).isoformat()
            out.changes[name] = (before, plain)
            out.metadata[name] = {
                "observed_at": None if observed is None else observed.isoformat(),
                "received_at": received,
                "source": source,
            }
    return out
