"""Every benchmark in one run, each figure over its floor measured in the same run.

    python -m bench            # the full run (fleet of 100,000 devices)
    python -m bench --quick    # a small run (about 2-3 minutes on 2 cores; fleet of 10,000)
    python -m bench --only latency,push --profile

Writes ``bench/results/report.md`` and ``bench/results/report.json`` (and one pair per benchmark).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable

import anyio

import twin.http
from bench import failover, fleet, fleet_ops, latency, push, storm, throughput
from bench.common import RESULTS, Report

NAMES = ("latency", "throughput", "push", "fleet", "fleet_ops", "storm", "failover")


async def run(quick: bool, only: set[str], profile: bool) -> list[Report]:

    async def lat() -> Report:
        report = Report(name="latency")
        await latency.measure(300 if quick else 1000, report, profile)
        return report

    async def tput() -> Report:
        report = Report(name="throughput")
        await throughput.measure(200, 6 if quick else 10, report, profile)
        return report

    async def pushes() -> Report:
        report = Report(name="push")
        await push.measure(50, 20 if quick else 40, report, profile)
        return report

    async def fleet_() -> Report:
        return await fleet.main(10_000 if quick else 100_000, 500 if quick else 1000)

    async def fleet_ops_() -> Report:
        return await fleet_ops.main(quick)

    async def failover_() -> Report:
        return await failover.main(quick)

    async def storm_() -> Report:
        return await storm.main(1000 if quick else 5000)

    plan: dict[str, Callable[[], Awaitable[Report]]] = {
        "latency": lat,
        "throughput": tput,
        "push": pushes,
        "fleet": fleet_,
        "fleet_ops": fleet_ops_,
        "failover": failover_,
        "storm": storm_,
    }
    reports = []
    for name in NAMES:
        if name in only:
            started = time.perf_counter()
            report = await plan[name]()
            if name not in ("fleet", "fleet_ops", "storm"):  # those write their own
                report.write()
            print(f"[{name}: {time.perf_counter() - started:.0f}s]\n")
            reports.append(report)
    return reports


def write(reports: list[Report], command: str) -> None:
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    data = {**meta, "benchmarks": {r.name: r.figures for r in reports}}
    (RESULTS / "report.json").write_text(json.dumps(data, indent=2))
    lines = [
        "# locktwin benchmarks",
        "",
        f"`{command}` on {meta['when']}, Python {meta['python']}, {meta['cpus']} CPUs. Each ratio is over a",
        "floor measured in the same run, against the same broker and with the same clients.",
        "",
        "| figure | measured | floor | ratio (goal) |",
        "|---|---|---|---|",
    ]
    for report in reports:
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in report.rows]
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profiles of the measured phases")
    parser.add_argument(
        "--http-backend",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="transport of the vendor clients (twin/http.py; httpx: httpx's own, to compare)",
    )
    args = parser.parse_args()
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    twin.http.DEFAULT_BACKEND = args.http_backend
    reports = anyio.run(run, args.quick, only, args.profile)
    command = "python -m bench" + (" --quick" if args.quick else "")
    if only != set(NAMES):
        command += f" --only {','.join(n for n in NAMES if n in only)}"
    if args.http_backend != "aiohttp":
        command += f" --http-backend {args.http_backend}"
    write(reports, command)


if __name__ == "__main__":
    main()
