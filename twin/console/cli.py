"""``locktwin console``: serve the operator console until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import suppress
from pathlib import Path

import anyio

from twin.config import load_settings

__all__ = ["add_console_command", "run_console"]


def run_console(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    console = settings.console.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        from twin.console.app import serve_console

        async with serve_console(settings=console, mqtt=settings.mqtt, base=settings.base_topic) as (_, served):
            print(f"locktwin console on {served.url} (broker {settings.mqtt.url})", file=sys.stderr)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

    with suppress(KeyboardInterrupt):
        anyio.run(serve)
    return 0


def add_console_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``locktwin console`` on the CLI's subcommands."""
    cmd = sub.add_parser("console", help="serve the operator console (web): log in with a broker username")
    cmd.add_argument("--config", type=Path, help="TOML file ([console] table; LOCKTWIN_CONSOLE__* override it)")
    cmd.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=None, help="port (default 8080)")
    cmd.set_defaults(func=run_console)
