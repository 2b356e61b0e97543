"""``locktwin fleet``: run the fleet service, query it, and manage its jobs and zones.

::

    locktwin fleet                                   # run the service (--config locktwin.toml)
    locktwin fleet query 'vendor=okai lock=UNLOCKED battery<20 zone=old-town' [--sort=-battery] [--all]
    locktwin fleet job create --query 'zone=old-town lock=UNLOCKED' --lock --rate 5 --in-flight 20 \\
        --abort-percent 10 --abort-min 20 --daily 23:00 --tz Europe/Berlin [--dry-run] [--wait]
    locktwin fleet job list | show ID | pause ID | resume ID | cancel ID
    locktwin fleet zone put zones.geojson | delete ID | list

Exit codes: 0 done (a waited job COMPLETED with no failed execution), 1 a waited job ABORTED or
with failures, 2 usage or configuration, 3 rejected (the answer says why), 5 a waited job
CANCELED, 6 no answer before --timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from twin.config import load_settings
from twin.fleet.client import FleetClient, NoAnswer
from twin.fleet.zones import read_zones_file
from twin.operator_cli import parse_arguments

__all__ = ["register"]

EXIT_FAILED, EXIT_REJECTED, EXIT_CANCELED, EXIT_TIMEOUT = 1, 3, 5, 6
FINAL_JOB = {"COMPLETED", "CANCELED", "ABORTED"}
FAILURES = ("FAILED", "TIMED_OUT", "REJECTED")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fleet = sub.add_parser("fleet", help="the fleet service: run it, query it, jobs and zones")
    fleet.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
    fleet.set_defaults(func=_cmd_run)
    verbs = fleet.add_subparsers(dest="fleet_command")

    query = verbs.add_parser("query", help="devices matching a filter (see README: the filter language)")
    query.add_argument("filter", nargs="?", default="")
    query.add_argument("--sort", default=None, help="field, or -field for descending (write --sort=-field)")
    query.add_argument("--limit", type=int, default=100)
    query.add_argument("--all", action="store_true", help="follow the pages to the end")
    query.add_argument("--json", action="store_true", help="print the answer's rows as JSON lines")
    query.set_defaults(func=_cmd_query)

    job = verbs.add_parser("job", help="create, list, show, pause, resume, cancel jobs").add_subparsers(
        dest="job_command", required=True
    )
    create = job.add_parser("create", help="a job: a target, an operation, a rollout, a schedule")
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--query", help="a filter, resolved when the job starts")
    target.add_argument("--devices", help="vendor/device,vendor/device,...")
    op = create.add_mutually_exclusive_group(required=True)
    op.add_argument("--lock", action="store_true")
    op.add_argument("--unlock", action="store_true")
    op.add_argument("--set", metavar="FIELD=VALUE", help="another desired field (JSON value)")
    op.add_argument("--action", help="a vendor action; its arguments as key=value after the options")
    create.add_argument("arguments", nargs="*", help="key=value arguments of --action")
    create.add_argument("--name")
    create.add_argument("--rate", type=float, default=10.0, help="commands a second, at most")
    create.add_argument("--in-flight", type=int, default=50, help="executions awaiting their answer, at most")
    create.add_argument("--abort-percent", type=float, help="abort when more than this %% failed ...")
    create.add_argument("--abort-min", type=int, default=1, help="... after at least this many executions")
    create.add_argument("--execution-timeout", type=float, default=60.0, help="seconds per execution")
    when = create.add_mutually_exclusive_group()
    when.add_argument("--at", help="ISO time with an offset, e.g. 2026-12-07T23:00:00+01:00")
    when.add_argument("--daily", metavar="HH:MM")
    create.add_argument("--tz", default="UTC", help="time zone of --daily, e.g. Europe/Berlin")
    create.add_argument("--dry-run", action="store_true", help="print the target set; create nothing")
    create.add_argument("--wait", action="store_true", help="follow the job with a progress bar to its end")
    create.set_defaults(func=_cmd_job_create)
    listing = job.add_parser("list")
    listing.add_argument("--status", choices=("SCHEDULED", "IN_PROGRESS", "COMPLETED", "CANCELED", "ABORTED"))
    listing.set_defaults(func=_cmd_job_list)
    for verb in ("show", "pause", "resume", "cancel"):
        cmd = job.add_parser(verb)
        cmd.add_argument("job_id")
        cmd.add_argument("--wait", action="store_true", help="follow the job to its end")
        cmd.set_defaults(func=partial(_cmd_job_verb, verb))

    zone = verbs.add_parser("zone", help="put, delete, list zones").add_subparsers(dest="zone_command", required=True)
    put = zone.add_parser("put", help="a GeoJSON FeatureCollection or a JSON list of zone documents")
    put.add_argument("file", type=Path)
    put.set_defaults(func=_cmd_zone_put)
    delete = zone.add_parser("delete")
    delete.add_argument("zone_id")
    delete.set_defaults(func=_cmd_zone_delete)
    zone.add_parser("list").set_defaults(func=_cmd_zone_list)
    for parser in (
        query,
        create,
        listing,
        put,
        delete,
        *(job.choices[v] for v in ("show", "pause", "resume", "cancel")),
        zone.choices["list"],
    ):
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML file")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")


# -- the service -------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    import gc

    from twin.fleet.service import FleetService

    settings = load_settings(args.config)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.fleet.zones_file is not None:
        read_zones_file(settings.fleet.zones_file)  # a bad file is a configuration error (exit 2), not a crash
    service = FleetService(
        settings=settings.fleet, mqtt=settings.mqtt, data_dir=settings.data_dir, base_topic=settings.base_topic
    )

    async def run() -> None:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            tg.start_soon(service.run)
            await service.ready.wait()
            gc.freeze()  # the index lives as long as the process: keep it out of full collections
            logging.getLogger("locktwin.fleet").info(
                "fleet service on %s, %d devices", service.http_url, len(service.index)
            )

    anyio.run(run)
    return 0


# -- requests ----------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> FleetClient:
    return FleetClient(settings=load_settings(getattr(args, "config", None)))


def _ask(args: argparse.Namespace, op: str, body: dict[str, Any]) -> dict[str, Any] | int:
    """The answer's data, or an exit code after printing why there is none."""
    try:
        answer = anyio.run(partial(_client(args).request, op, body, timeout=args.timeout))
    except NoAnswer as exc:
        print(f"locktwin: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    if answer.get("status") != "succeeded":
        error = answer.get("error") or {}
        print(f"{answer.get('status')}: {error.get('code')} {error.get('message', '')}", file=sys.stderr)
        position = (answer.get("data") or {}).get("position")
        text = body.get("q") if op == "query" else (body.get("target") or {}).get("query")
        if isinstance(position, int) and isinstance(text, str):
            print(f"  {text}\n  {' ' * (position - 1)}^", file=sys.stderr)
        return EXIT_REJECTED if answer.get("status") == "rejected" else EXIT_FAILED
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _cmd_query(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"q": args.filter, "limit": args.limit}
    if args.sort:
        body["sort"] = args.sort
    printed = 0
    while True:
        data = _ask(args, "query", body)
        if isinstance(data, int):
            return data
        rows = data["rows"]
        if args.json:
            for row in rows:
                print(json.dumps(row, sort_keys=True))
        else:
            _table(rows, header=printed == 0)
        printed += len(rows)
        if not args.all or not data.get("next_cursor"):
            break
        body["cursor"] = data["next_cursor"]
    print(f"{printed} of {data['total']} devices", file=sys.stderr)
    return 0


def _table(rows: list[dict[str, Any]], *, header: bool) -> None:
    if header:
        print(f"{'DEVICE':<40} {'LOCK':<10} {'ONLINE':<6} {'BATTERY':>7}  {'AGE':>6}  ZONES")
    now = time.time()
    for r in rows:
        battery = "" if r.get("battery") is None else f"{r['battery']:.0f}%"
        online = "?" if r.get("online") is None else ("yes" if r["online"] else "no")
        age = ""
        if r.get("updated_at"):
            from datetime import datetime

            age = _duration(now - datetime.fromisoformat(r["updated_at"]).timestamp())
        flags = ("held " if r.get("held") else "") + ("pending " if r.get("pending") else "")
        print(
            f"{r['vendor'] + '/' + r['device']:<40} {r['lock']:<10} {online:<6} {battery:>7}  {age:>6}  "
            f"{','.join(r.get('zones') or [])} {flags}".rstrip()
        )


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _job_spec(args: argparse.Namespace) -> dict[str, Any]:
    if args.lock or args.unlock:
        operation: dict[str, Any] = {"kind": "set", "field": "lock", "value": "LOCKED" if args.lock else "UNLOCKED"}
    elif args.set:
        name, sep, raw = args.set.partition("=")
        if not sep:
            raise ValueError(f"--set takes FIELD=VALUE, not {args.set!r}")
        operation = {"kind": "set", "field": name, "value": parse_arguments([f"v={raw}"])["v"]}
    else:
        operation = {"kind": "action", "action": args.action, "arguments": parse_arguments(args.arguments)}
    if args.arguments and not args.action:
        raise ValueError("key=value arguments go with --action")
    target = {"query": args.query} if args.query is not None else {"devices": args.devices.split(",")}
    spec: dict[str, Any] = {
        "target": target,
        "operation": operation,
        "rollout": {"max_per_second": args.rate, "max_in_flight": args.in_flight},
        "execution_timeout": args.execution_timeout,
    }
    if args.name:
        spec["name"] = args.name
    if args.abort_percent is not None:
        spec["abort"] = {"failure_percent": args.abort_percent, "min_executions": args.abort_min}
    if args.at:
        spec["schedule"] = {"at": args.at}
    elif args.daily:
        spec["schedule"] = {"daily": args.daily, "tz": args.tz}
    return spec


def _cmd_job_create(args: argparse.Namespace) -> int:
    spec = _job_spec(args)
    if args.dry_run:
        spec["dry_run"] = True
    data = _ask(args, "job_create", spec)
    if isinstance(data, int):
        return data
    if args.dry_run:
        for device in data["devices"]:
            print(device)
        more = data["total"] - len(data["devices"])
        print(
            f"{data['total']} devices{f' ({more} not listed)' if more else ''}, {data['skipped']} already in the "
            "target state (would be SKIPPED); nothing created",
            file=sys.stderr,
        )
        return 0
    print(data["id"])
    return _wait(args, data) if args.wait else 0


def _cmd_job_list(args: argparse.Namespace) -> int:
    data = _ask(args, "job_list", {"status": args.status} if args.status else {})
    if isinstance(data, int):
        return data
    print(f"{'JOB':<18} {'STATUS':<12} {'RUN':>3} {'DONE':>11}  NAME")
    for job in data["jobs"]:
        done = job["total"] - job["counts"]["QUEUED"] - job["counts"]["IN_PROGRESS"]
        paused = " (paused)" if job["paused"] else ""
        progress = f"{done}/{job['total']}"
        print(f"{job['id']:<18} {job['status'] + paused:<12} {job['run']:>3} {progress:>11}  {job['name'] or ''}")
    return 0


def _cmd_job_verb(verb: str, args: argparse.Namespace) -> int:
    data = _ask(args, f"job_{verb}", {"job_id": args.job_id})
    if isinstance(data, int):
        return data
    if args.wait:
        return _wait(args, data)
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _wait(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    async def follow() -> dict[str, Any]:
        last = doc
        if last["status"] in FINAL_JOB:
            return last
        async for update in _client(args).follow_job(doc["id"]):
            last = update
            _progress(update)
            if update["status"] in FINAL_JOB or (update["status"] == "SCHEDULED" and update["run"] > doc["run"]):
                break
        return last

    final = anyio.run(follow)
    print(file=sys.stderr)
    counts = final["counts"]
    print(" ".join(f"{k} {v}" for k, v in counts.items() if v), file=sys.stderr)
    if final["status"] == "CANCELED":
        return EXIT_CANCELED
    if final["status"] == "ABORTED" or any(counts[k] for k in FAILURES):
        if final.get("reason"):
            print(f"{final['status']}: {final['reason']}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _progress(doc: dict[str, Any]) -> None:
    counts, total = doc["counts"], doc["total"]
    done = total - counts["QUEUED"] - counts["IN_PROGRESS"]
    width = 30
    filled = width * done // total if total else (width if doc["status"] in FINAL_JOB else 0)
    bar = "#" * filled + "." * (width - filled)
    eta = ""
    if doc.get("estimated_end"):
        from datetime import datetime

        eta = f" ETA {_duration(datetime.fromisoformat(doc['estimated_end']).timestamp() - time.time())}"
    shown = " ".join(f"{k[:4]} {counts[k]}" for k in ("SUCCEEDED", "SKIPPED", *FAILURES) if counts[k])
    state = doc["status"] + (" paused" if doc["paused"] else "")
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"[{bar}] {done}/{total} {state} {shown} {doc['rate']:.1f}/s{eta}".ljust(100), end=end, file=sys.stderr)


# -- zones -------------------------------------------------------------------------------------------


def _cmd_zone_put(args: argparse.Namespace) -> int:
    for zone in read_zones_file(args.file):
        data = _ask(args, "zone_put", zone.model_dump(mode="json"))
        if isinstance(data, int):
            return data
        print(data["id"])
    return 0


def _cmd_zone_delete(args: argparse.Namespace) -> int:
    data = _ask(args, "zone_delete", {"zone_id": args.zone_id})
    return data if isinstance(data, int) else 0


def _cmd_zone_list(args: argparse.Namespace) -> int:
    data = _ask(args, "zone_list", {})
    if isinstance(data, int):
        return data
    for zone in data["zones"]:
        rules = ",".join(zone["rules"]) or "-"
        print(
            f"{zone['id']:<24} {zone['geometry']['type']:<13} {rules:<24} {data['members'].get(zone['id'], 0):>6} "
            f"devices  {zone.get('name') or ''}"
        )
    return 0
