"""``locktwin segway ...``: operator commands (no secret is ever printed).

- ``check``: fetch a token and read every configured vehicle, to prove credentials, region and
  devices before running the bridge.
- ``sign key=value ...``: the push signature of these fields, to try a webhook by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from bridges.segway.client import SegwayClient
from bridges.segway.mapping import status_patch
from bridges.segway.push import push_signature
from bridges.segway.settings import SegwaySettings
from twin.adapter import VendorError
from twin.config import load_settings, load_vendor_settings

__all__ = ["main"]


def _say(text: str, *, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(text + "\n")


def _settings(config: Path | None) -> SegwaySettings:
    table = load_settings(config).vendors.get("segway", {})
    settings = load_vendor_settings(SegwaySettings, table)
    assert isinstance(settings, SegwaySettings)
    return settings


async def _check(settings: SegwaySettings) -> int:
    failures = 0
    async with SegwayClient(settings=settings) as client:
        _say(f"segway: {settings.api_base_url}, platform {settings.client_id}")
        for iot_code in settings.devices or []:
            try:
                values = status_patch(await client.status(iot_code)).values
            except VendorError as exc:
                failures += 1
                _say(f"  {iot_code}: {exc.info.code} ({exc.info.vendor_code}: {exc.info.message})")
                continue
            shown = {k: str(v) for k, v in values.items() if k in ("lock", "online", "battery")}
            _say(f"  {iot_code}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        if not settings.devices:
            _say("  no devices configured (devices = [...])")
        _say(f"token fetched {client.token_fetches} time(s)")
    return 1 if failures else 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="locktwin segway", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file (LOCKTWIN_* variables override it)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="fetch a token and read each configured vehicle")
    sign = sub.add_parser("sign", help="the push signature of key=value fields")
    sign.add_argument("fields", nargs="+", metavar="key=value")
    args = parser.parse_args(list(argv))
    try:
        settings = _settings(args.config)
    except ValueError as exc:
        _say(f"locktwin segway: {exc}", err=True)
        return 2
    if args.command == "sign":
        fields = dict(field.partition("=")[::2] for field in args.fields)
        _say(push_signature(fields, settings.client_secret.get_secret_value()))
        return 0
    try:
        return anyio.run(_check, settings)
    except VendorError as exc:
        _say(f"locktwin segway: {exc.info.code}: {exc.info.message}", err=True)
        return 1
