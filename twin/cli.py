"""``locktwin``: run bridges, generate the contract, and vendor commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from twin.adapter import Adapter
from twin.config import LocktwinSettings, load_settings, load_vendor_settings
from twin.registry import ADAPTERS, load_adapter_class
from twin.runtime import BridgeRuntime

__all__ = ["main"]

log = logging.getLogger("locktwin")


def resolve_adapter(name: str) -> type[Adapter]:
    """A registered vendor name, or ``package.module:Class`` for an adapter of your own."""
    if ":" not in name:
        return load_adapter_class(name)
    module_name, _, class_name = name.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{name} is not an Adapter")
    return cls


def build_runtime(settings: LocktwinSettings, adapter_cls: type[Adapter]) -> BridgeRuntime:
    table = settings.vendors.get(adapter_cls.vendor, {})
    adapter = adapter_cls(settings=load_vendor_settings(adapter_cls.settings_model, table))
    return BridgeRuntime(
        adapter=adapter,
        mqtt=settings.mqtt,
        data_dir=settings.data_dir,
        base_topic=settings.base_topic,
        options=settings.bridge(adapter_cls.vendor),
        store_synchronous=settings.store_synchronous,
    )


async def run_bridges(runtimes: Sequence[BridgeRuntime]) -> None:
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


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtimes = [build_runtime(settings, resolve_adapter(v)) for v in args.vendors]
    anyio.run(run_bridges, runtimes)
    return 0


def _cmd_contracts(args: argparse.Namespace) -> int:
    from contracts.generate import check, write

    if args.check:
        drift = check(args.out)
        for line in drift:
            print(line, file=sys.stderr)
        return 1 if drift else 0
    write(args.out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locktwin", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one or more vendor bridges")
    run.add_argument("vendors", nargs="+", help=f"vendor ({', '.join(sorted(ADAPTERS)) or 'none yet'}) or module:Class")
    run.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
    run.set_defaults(func=_cmd_run)
    con = sub.add_parser("contracts", help="write (or --check) the JSON Schemas and AsyncAPI document")
    con.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "contracts")
    con.add_argument("--check", action="store_true")
    con.set_defaults(func=_cmd_contracts)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ADAPTERS:
        return load_adapter_class(argv[0]).cli(argv[1:])
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (LookupError, TypeError, ValueError) as exc:
        print(f"locktwin: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
