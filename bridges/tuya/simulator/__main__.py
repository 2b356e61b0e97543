"""``python -m bridges.tuya.simulator --port N --devices K``: serve a simulated Tuya Cloud."""

from __future__ import annotations

import argparse

import anyio

from bridges.tuya.simulator.app import TuyaSimulator, serve_simulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridges.tuya.simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8087)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--bolt-seconds", type=float, default=0.3)
    parser.add_argument("--token-lifetime", type=float, default=7200.0)
    args = parser.parse_args()
    sim = TuyaSimulator(devices=args.devices, bolt_seconds=args.bolt_seconds, token_lifetime=args.token_lifetime)

    async def serve() -> None:
        async with serve_simulator(sim, host=args.host, port=args.port) as served:
            print(f"tuya simulator on {served.url} devices: {' '.join(sim.device_ids)}", flush=True)  # noqa: T201
            await anyio.sleep_forever()

    anyio.run(serve)


if __name__ == "__main__":
    main()
