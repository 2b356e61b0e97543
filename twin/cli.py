"""``locktwin``: run bridges, send commands, watch devices, run the demo and the simulators."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack, suppress
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
from pydantic import ValidationError

from twin.adapter import Adapter
from twin.cluster import ClusterRuntime
from twin.config import (
    ConfigError,
    LocktwinSettings,
    TlsSettingsError,
    is_secret_key,
    load_settings,
    load_vendor_settings,
)
from twin.console.cli import add_console_command
from twin.datalock import DataDirLocked
from twin.mqtt import UnsupportedTopicError, describe_error
from twin.operator_cli import EXIT_NO_BROKER, EXIT_TIMEOUT, OperatorClient, parse_arguments, parse_target
from twin.registry import ADAPTERS, load_adapter_class
from twin.runtime import BridgeRuntime
from twin.shard import Shard
from twin.store import StoreError

__all__ = [
    "main",
    "parser",
]

log = logging.getLogger("locktwin")


def resolve_adapter(name: str) -> type[Adapter[Any]]:
    """A registered vendor name, or ``package.module:Class`` for an adapter of your own."""
    if ":" not in name:
        return load_adapter_class(name)
    module_name, _, class_name = name.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{name} is not an Adapter")
    return cls


def build_runtime(
    settings: LocktwinSettings, adapter_cls: type[Adapter[Any]], shard: Shard | None = None
) -> BridgeRuntime | ClusterRuntime:
    table = settings.vendors.get(adapter_cls.vendor, {})
    adapter = adapter_cls(settings=load_vendor_settings(adapter_cls.settings_model, table))
    if settings.store is not None:
        if shard is not None:
            raise ConfigError(
                ["--shard is for SQLite stores; with store = postgresql://... instances share partitions"]
            )
        options = settings.bridge(adapter_cls.vendor)
        if options.budget is not None or options.device_budget is not None:
            # each instance would count only its own requests: N instances would spend N budgets
            raise ConfigError(
                [
                    f"[bridges.{adapter_cls.vendor}] budget and device_budget are for SQLite stores: instances "
                    "sharing a postgresql:// store do not share one ledger yet"
                ]
            )
        return ClusterRuntime(
            adapter=adapter,
            mqtt=settings.mqtt.for_vendor(adapter_cls.vendor),
            store_url=settings.store,
            store_password=settings.store_secret(),
            data_dir=settings.data_dir,
            base_topic=settings.base_topic,
            options=options,
            cluster=settings.cluster,
            homeassistant=settings.homeassistant,
        )
    return BridgeRuntime(
        adapter=adapter,
        mqtt=settings.mqtt.for_vendor(adapter_cls.vendor),
        data_dir=settings.data_dir,
        base_topic=settings.base_topic,
        options=settings.bridge(adapter_cls.vendor),
        store_synchronous=settings.store_synchronous,
        homeassistant=settings.homeassistant,
        shard=shard,
    )


async def run_bridges(
    runtimes: Sequence[BridgeRuntime | ClusterRuntime], *, metrics: tuple[str, int] | None = None
) -> None:
    with ExitStack() as locks:
        for runtime in runtimes:  # before anything starts: a second process on a store stops here
            if isinstance(runtime, BridgeRuntime):
                locks.enter_context(runtime.data_lock)
        await _run_bridges(runtimes, metrics=metrics)


async def _run_bridges(runtimes: Sequence[BridgeRuntime | ClusterRuntime], *, metrics: tuple[str, int] | None) -> None:
    # the metrics server outside the bridges' task group: its own task group must close after theirs
    async with AsyncExitStack() as stack:
        if metrics is not None:
            from prometheus_client import make_asgi_app

            from twin.asgi import serve_asgi

            served = await stack.enter_async_context(serve_asgi(make_asgi_app(), host=metrics[0], port=metrics[1]))
            log.info("metrics on %s/metrics", served.url)
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("stopping on %s", signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            for runtime in runtimes:
                tg.start_soon(runtime.run)
            for runtime in runtimes:
                await runtime.ready.wait()
            # What the bridges loaded at start (a fleet's twins and devices) lives as long as the
            # process: keep it out of the collector's full passes, which would otherwise walk it all.
            gc.freeze()


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO; a vendor that puts keys in a query string would leak them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    shard = Shard.parse(args.shard) if args.shard else None
    settings.mqtt.ssl_context()  # a TLS file that cannot be used stops the bridge now, in one line
    runtimes = [build_runtime(settings, resolve_adapter(v), shard) for v in args.vendors]
    metrics = None if settings.metrics_port is None else (settings.metrics_host, settings.metrics_port)
    try:
        anyio.run(partial(run_bridges, runtimes, metrics=metrics))
    except BaseExceptionGroup as group:
        # Refusals at start (names the broker cannot carry, a TLS file gone) come out of the task
        # group: one line each, not a traceback.
        refused, _ = group.split((UnsupportedTopicError, TlsSettingsError, StoreError))
        if refused is None:
            raise
        for exc in _leaves(refused):
            log.error("%s", exc)
        return 2
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf for exc in group.exceptions for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


def _cmd_contracts(args: argparse.Namespace) -> int:
    from contracts.generate import check, write

    if args.check:
        drift = check(args.out)
        for line in drift:
            print(line, file=sys.stderr)
        return 1 if drift else 0
    write(args.out)
    return 0


def _operator(args: argparse.Namespace) -> OperatorClient:
    return OperatorClient(settings=load_settings(args.config))


def _cmd_lock(args: argparse.Namespace) -> int:
    vendor, device = parse_target(args.target)
    body: dict[str, object] = {"lock": "LOCKED" if args.command == "lock" else "UNLOCKED"}
    send = partial(_operator(args).command, wait=args.wait, timeout=args.timeout, expires_in=args.expires_in)
    return anyio.run(partial(send, vendor, device, "set", body))


def _cmd_get(args: argparse.Namespace) -> int:
    vendor, device = parse_target(args.target)
    return anyio.run(partial(_operator(args).command, vendor, device, "get", {}, wait=True, timeout=args.timeout))


def _cmd_request(args: argparse.Namespace) -> int:
    vendor, device = parse_target(args.target)
    body = parse_arguments(args.arguments)
    leaf = f"request/{args.action}"
    client = _operator(args)
    return anyio.run(
        partial(client.command, vendor, device, leaf, body, wait=True, timeout=args.timeout, expires_in=args.expires_in)
    )


def _cmd_twin(args: argparse.Namespace) -> int:
    vendor, device = parse_target(args.target)
    raw = anyio.run(partial(_operator(args).retained, vendor, device, "twin", timeout=args.timeout))
    if raw is None:
        print(f"no twin for {args.target} (unknown device, or its bridge never ran)", file=sys.stderr)
        return EXIT_TIMEOUT
    print(json.dumps(json.loads(raw), indent=2, sort_keys=True))
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    return anyio.run(partial(_operator(args).watch, args.filter, once=args.once))


def _cmd_homeassistant_clear_legacy(args: argparse.Namespace) -> int:
    from aiomqtt import MqttError

    from twin.homeassistant_legacy import clear_legacy_discovery

    settings = load_settings(args.config)
    cleanup = partial(clear_legacy_discovery, settings=settings, dry_run=args.dry_run, timeout=args.timeout)
    try:
        result = anyio.run(cleanup)
    except TimeoutError:
        print(f"no answer from {settings.mqtt.url} within {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    except MqttError as exc:
        print(f"locktwin: {settings.mqtt.url}: {exc}", file=sys.stderr)
        return 1
    listed = ", ".join(f"{vendor} {count}" for vendor, count in result.devices.items()) or "none"
    print(f"devices listed by the bridges: {listed}", file=sys.stderr)
    for topic in result.found:
        print(topic)
    if args.dry_run:
        print(f"{len(result.found)} old discovery configs found (--dry-run: left as they are)", file=sys.stderr)
        return 0
    if result.remaining:
        print(
            f"{len(result.remaining)} of {len(result.found)} old configs are still there: the broker refused "
            f"the empty payloads; run as a user that may write {settings.homeassistant.prefix}/# "
            "(homeassistant in mosquitto/acl)",
            file=sys.stderr,
        )
        return 1
    print(f"{len(result.found)} old discovery configs emptied", file=sys.stderr)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from twin.asgi import serve_asgi
    from twin.simlimits import CONTROL_PATH, parse_profile, with_control

    cls = resolve_adapter(args.vendor)
    kit = cls.simulator(devices=args.devices)
    if kit is None:
        print(f"{cls.vendor} has no simulator", file=sys.stderr)
        return 2
    app = kit.app
    if kit.limits is not None:
        limits = {"max_in_flight": args.max_in_flight, "rate": args.rate, "quota": args.quota}
        try:
            kit.limits.configure(parse_profile(limits))
        except ValueError as exc:
            print(f"--quota: {exc}", file=sys.stderr)
            return 2
        app = with_control(kit.app, kit.limits)

    async def serve() -> None:
        async with serve_asgi(app, host=args.host, port=args.port) as served:
            print(f"{cls.vendor} simulator on {served.url} with {len(kit.device_ids)} devices:", flush=True)
            if kit.limits is not None:
                print(f"  its limits: GET/PUT {served.url}{CONTROL_PATH}", flush=True)
            print(f"  {', '.join(kit.device_ids)}", flush=True)
            print(simulator_settings(cls.vendor, cls.settings_model, kit.settings(served.url)), flush=True)
            await anyio.sleep_forever()

    with suppress(KeyboardInterrupt):
        anyio.run(serve)
    return 0


def simulator_settings(vendor: str, model: type[Any], table: dict[str, Any]) -> str:
    """How to point a bridge at a simulator: its settings table as TOML, and its (demo-only) secrets
    as the environment variables they must be set in (the TOML file refuses secrets)."""
    prefix = str(getattr(model, "model_config", {}).get("env_prefix") or f"LOCKTWIN_{vendor.upper()}_")
    plain = {k: v for k, v in table.items() if not is_secret_key(k)}
    secret = {k: v for k, v in table.items() if is_secret_key(k)}
    lines = ["Point a bridge at it (these credentials are the simulator's own, for demos and tests):", ""]
    lines.append(f"[vendors.{vendor}]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in plain.items()]
    if secret:
        lines += ["", "and in the environment:"]
        lines += [f"{prefix}{key.upper()}={value}" for key, value in secret.items()]
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    from twin.demo import run_demo

    return run_demo(data_dir=args.data, devices=args.devices, port=args.port, live=not args.no_live, broker=args.broker)


def _vendor_help(vendor: str) -> str:
    try:
        commands = load_adapter_class(vendor).cli_commands
    except Exception:  # a vendor that cannot be imported must not break --help
        commands = {}
    if not commands:
        return f"{vendor}'s own commands (locktwin {vendor} --help)"
    listed = "; ".join(f"{vendor} {name}: {text}" for name, text in commands.items())
    return f"{listed} (locktwin {vendor} --help)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locktwin", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one or more vendor bridges")
    run.add_argument("vendors", nargs="+", help=f"vendor ({', '.join(sorted(ADAPTERS)) or 'none yet'}) or module:Class")
    run.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
    run.add_argument("--shard", help="I/N: serve only the devices of shard I (0-based) of N")
    run.set_defaults(func=_cmd_run)
    con = sub.add_parser("contracts", help="write (or --check) the JSON Schemas and AsyncAPI document")
    con.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "contracts")
    con.add_argument("--check", action="store_true")
    con.set_defaults(func=_cmd_contracts)
    for name in ("lock", "unlock"):
        cmd = sub.add_parser(name, help=f"{name} a device: <vendor>/<device>")
        cmd.add_argument("target")
        cmd.add_argument("--wait", action="store_true", help="wait for the final answer (exit 0 only if succeeded)")
        cmd.add_argument("--timeout", type=float, default=60.0)
        cmd.add_argument(
            "--expires-in", type=float, default=None, help="seconds the command may take (default 30; never run later)"
        )
        cmd.set_defaults(func=_cmd_lock)
    get = sub.add_parser("get", help="refresh a device's twin from its vendor now")
    get.add_argument("target")
    get.add_argument("--timeout", type=float, default=30.0)
    get.set_defaults(func=_cmd_get)
    req = sub.add_parser("request", help="a vendor action: request <vendor>/<device> <action> key=value...")
    req.add_argument("target")
    req.add_argument("action")
    req.add_argument("arguments", nargs="*")
    req.add_argument("--timeout", type=float, default=60.0)
    req.add_argument("--expires-in", type=float, default=None, help="seconds the action may take (default 30)")
    req.set_defaults(func=_cmd_request)
    twin = sub.add_parser("twin", help="print a device's twin document")
    twin.add_argument("target")
    twin.add_argument("--timeout", type=float, default=5.0)
    twin.set_defaults(func=_cmd_twin)
    watch = sub.add_parser("watch", help="a live table of devices")
    watch.add_argument("filter", nargs="?", default="+/+", help="<vendor>/<device> with MQTT wildcards")
    watch.add_argument("--once", action="store_true", help="print the table once and exit")
    watch.set_defaults(func=_cmd_watch)
    ha = sub.add_parser("homeassistant", help="Home Assistant discovery: clear-legacy").add_subparsers(
        dest="homeassistant", required=True
    )
    legacy = ha.add_parser(
        "clear-legacy",
        help="empty the discovery configs earlier versions announced per device (once, after upgrading; "
        "as a user that may write the discovery prefix)",
    )
    legacy.add_argument("--dry-run", action="store_true", help="print the old configs, change nothing")
    legacy.add_argument("--timeout", type=float, default=30.0)
    legacy.set_defaults(func=_cmd_homeassistant_clear_legacy)
    for cmd in (*[sub.choices[n] for n in ("lock", "unlock", "get", "request", "twin", "watch")], legacy):
        cmd.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
    for vendor in sorted(ADAPTERS):
        # dispatched by main() before parsing; listed here so that --help shows them
        sub.add_parser(vendor, help=_vendor_help(vendor), add_help=False)
    sim = sub.add_parser("simulate", help="serve a vendor's cloud simulator")
    sim.add_argument("vendor")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8080)
    sim.add_argument("--devices", type=int, default=5)
    sim.add_argument("--max-in-flight", type=int, help="the vendor refuses more calls at once than this")
    sim.add_argument("--rate", type=float, help="the vendor allows this many calls a second (a token bucket)")
    sim.add_argument("--quota", help="the vendor's call quota, N or N/second|minute|hour|day|month")
    sim.set_defaults(func=_cmd_simulate)
    demo = sub.add_parser("demo", help="broker, simulators and bridges on embedded defaults")
    demo.add_argument("--data", type=Path, default=Path("data/demo"))
    demo.add_argument("--devices", type=int, default=3, help="devices per vendor")
    demo.add_argument("--port", type=int, default=None, help="broker port (default: 1883, or a free one)")
    demo.add_argument("--no-live", action="store_true", help="no live table (for logs and CI)")
    demo.add_argument(
        "--broker", choices=("auto", "mosquitto", "embedded"), default="auto", help="auto: mosquitto if installed"
    )
    demo.set_defaults(func=_cmd_demo)
    add_console_command(sub)
    from twin.fleet.cli import register as register_fleet

    register_fleet(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ADAPTERS:
        return load_adapter_class(argv[0]).cli(argv[1:])
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"locktwin: configuration: {problem}", file=sys.stderr)
        return 2
    except (DataDirLocked, StoreError) as exc:
        print(f"locktwin: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # pydantic's own message repeats the input, which may hold a secret: names and reasons only
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or exc.title
            print(f"locktwin: configuration: {exc.title} {where}: {err['msg']}", file=sys.stderr)
        return 2
    except (LookupError, TypeError, ValueError) as exc:
        print(f"locktwin: {exc}", file=sys.stderr)
        return 2
    except aiomqtt.MqttError as exc:
        # the CLI's one connection failed: why, in one line (a refused certificate, a wrong CA...)
        print(f"locktwin: {describe_error(exc, load_settings(getattr(args, 'config', None)).mqtt)}", file=sys.stderr)
        return EXIT_NO_BROKER
    return result


if __name__ == "__main__":
    raise SystemExit(main())
