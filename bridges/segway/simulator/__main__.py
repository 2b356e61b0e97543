"""``python -m bridges.segway.simulator --port N --devices K``: serve the simulated cloud."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import anyio

from bridges.segway.simulator.core import DEFAULT_CLIENT_ID, SegwaySimulator

#: the same variable a bridge reads, so one environment configures both
SECRET_ENV = "LOCKTWIN_SEGWAY_CLIENT_SECRET"  # noqa: S105 - a variable name


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bridges.segway.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret-file", help="file holding the client secret (default: a random secret)")
    parser.add_argument("--bolt-seconds", type=float, default=0.3)
    parser.add_argument("--token-lifetime", type=float, default=43199.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--push-retry-delay", type=float, default=5.0)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    secret = os.environ.get(SECRET_ENV) or None
    if args.client_secret_file:
        with open(args.client_secret_file, encoding="utf-8") as handle:  # noqa: ASYNC230 - once at start
            secret = handle.read().strip()
    sim = SegwaySimulator(
        client_id=args.client_id,
        client_secret=secret,
        devices=args.devices,
        bolt_seconds=args.bolt_seconds,
        token_lifetime=args.token_lifetime,
        latency=args.latency,
        webhook_url=args.webhook_url,
        push_retry_delay=args.push_retry_delay,
    )
    async with sim.serve(host=args.host, port=args.port) as served:
        print(f"segway simulator on {served.url} with {len(sim.fleet)} vehicles", flush=True)  # noqa: T201
        origin = "random, set $" + SECRET_ENV + " to choose it" if secret is None else "as configured"
        print(f"  platform code {sim.client_id}, client secret {origin}", flush=True)  # noqa: T201
        for vehicle in sim.fleet:
            print(f"  {vehicle.iot_code}", flush=True)  # noqa: T201
        await anyio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO)
    try:
        anyio.run(_serve, _parse(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
