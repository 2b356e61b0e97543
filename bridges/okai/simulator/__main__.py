"""``python -m bridges.okai.simulator --port 8081 --devices 5``: serve a simulated OKAI cloud.

Credentials come from ``--user-key``/``--sign-key`` or the ``OKAI_SIM_USER_KEY``/``OKAI_SIM_SIGN_KEY``
variables; they are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from bridges.okai.simulator import DEFAULT_BOLT_SECONDS, OkaiSimulator, serve_simulator

DEV_USER_KEY = "okai-simulator-user-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridges.okai.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--user-key", default=os.environ.get("OKAI_SIM_USER_KEY", DEV_USER_KEY))
    parser.add_argument("--sign-key", default=os.environ.get("OKAI_SIM_SIGN_KEY"))
    parser.add_argument("--sign-params", choices=["all", "business"], default="all")
    parser.add_argument("--bolt-seconds", type=float, default=DEFAULT_BOLT_SECONDS)
    args = parser.parse_args(argv)
    sim = OkaiSimulator(
        user_key=args.user_key,
        sign_key=args.sign_key,
        sign_params=args.sign_params,
        devices=args.devices,
        bolt_seconds=args.bolt_seconds,
    )

    async def serve() -> None:
        async with serve_simulator(sim, host=args.host, port=args.port) as base_url:
            signing = "on" if args.sign_key else "off"
            sys.stdout.write(f"OKAI simulator on {base_url} (signing {signing})\n")
            sys.stdout.write("scooters: " + " ".join(sim.fleet.imeis) + "\n")
            sys.stdout.flush()
            await anyio.sleep_forever()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
