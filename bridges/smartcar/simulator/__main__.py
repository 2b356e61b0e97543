"""``python -m bridges.smartcar.simulator --port N --devices K``: serve the simulated Smartcar cloud."""

from __future__ import annotations

import argparse
import os

import anyio

from . import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEMO_CODE, SmartcarSimulator, serve_simulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridges.smartcar.simulator")
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--bolt-seconds", type=float, default=0.3)
    parser.add_argument("--access-token-lifetime", type=float, default=7200.0)
    parser.add_argument("--client-id", default=os.environ.get("SMARTCAR_SIM_CLIENT_ID", DEFAULT_CLIENT_ID))
    args = parser.parse_args()
    secret = os.environ.get("SMARTCAR_SIM_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    simulator = SmartcarSimulator(
        client_id=args.client_id,
        client_secret=secret,
        users=args.users,
        devices=args.devices,
        bolt_seconds=args.bolt_seconds,
        access_token_lifetime=args.access_token_lifetime,
        demo_code=DEMO_CODE,
    )

    async def serve() -> None:
        async with serve_simulator(simulator, port=args.port) as served:
            print(f"Smartcar simulator on {served.url} ({len(simulator.fleet)} vehicles)", flush=True)  # noqa: T201
            print(f"  LOCKTWIN_SMARTCAR_BASE_URL={served.url}/v2.0", flush=True)  # noqa: T201
            print(f"  LOCKTWIN_SMARTCAR_AUTH_URL={served.url}/oauth/token", flush=True)  # noqa: T201
            print(f"  LOCKTWIN_SMARTCAR_CONNECT_URL={served.url}/oauth/authorize", flush=True)  # noqa: T201
            print(f"  LOCKTWIN_SMARTCAR_CLIENT_ID={args.client_id}", flush=True)  # noqa: T201
            print(f"  LOCKTWIN_SMARTCAR_AUTH_CODE={DEMO_CODE}  (the simulator's public demo code)", flush=True)  # noqa: T201
            await anyio.sleep_forever()

    anyio.run(serve)


if __name__ == "__main__":
    main()
