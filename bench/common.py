"""Shared pieces of the benchmarks: a private broker, an observer, percentiles, the report."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.broker import MosquittoBroker

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def private_broker(workdir: Path, extra_config: str = "") -> Iterator[MosquittoBroker]:
    """A private mosquitto with the shipped configuration's in-flight limit: its CONNACK advertises
    it as Receive Maximum, which caps the bridge's publishing window (mosquitto's default is 20)."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = MosquittoBroker(workdir=workdir, extra_config="max_inflight_messages 100\n" + extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


@dataclass
class Report:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def ratio(self, label: str, measured: float, floor: float, goal: str, unit: str = "") -> float:
        ratio = measured / floor if floor else float("inf")
        self.figures[label] = {"measured": measured, "floor": floor, "ratio": ratio, "goal": goal, "unit": unit}
        self.rows.append((label, f"{measured:.4g}{unit}", f"{floor:.4g}{unit}", f"{ratio:.2f} ({goal})"))
        return ratio

    def value(self, label: str, measured: float, unit: str = "") -> None:
        self.figures[label] = {"measured": measured, "unit": unit}
        shown = f"{measured:,}" if isinstance(measured, int) else f"{measured:.4g}"
        self.rows.append((label, f"{shown}{unit}", "", ""))

    def write(self) -> Path:
        md = self.save()
        print(md.read_text(), end="")
        return md

    def save(self) -> Path:
        """Write the figures so far (a long benchmark keeps what it measured if a later part fails)."""
        RESULTS.mkdir(exist_ok=True)
        meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version()}
        (RESULTS / f"{self.name}.json").write_text(json.dumps({**meta, "figures": self.figures}, indent=2))
        lines = [f"## {self.name}", "", "| figure | measured | floor | ratio (goal) |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        md = RESULTS / f"{self.name}.md"
        md.write_text("\n".join(lines) + "\n")
        return md


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
