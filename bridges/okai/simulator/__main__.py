"""``python -m bridges.okai.simulator --port 8081 --devices 5``: serve a simulated OKAI cloud.

Credentials come from ``--user-key``/``--sign-key`` or the ``OKAI_SIM_USER_KEY``/``OKAI_SIM_SIGN_KEY``
variables; they are never printed. Served by uvicorn on its own listening socket (which gets
TCP_NODELAY, so a request does not pay a 40 ms Nagle/delayed-ACK stall).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import anyio
import uvicorn

from bridges.okai.simulator import DEFAULT_BOLT_SECONDS, DEFAULT_DELIVERY_SECONDS, OkaiSimulator
from twin.simlimits import CONTROL_PATH, parse_profile, with_control

DEV_USER_KEY = "okai-simulator-user-key"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridges.okai.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--user-key", default=os.environ.get("OKAI_SIM_USER_KEY", DEV_USER_KEY))
    parser.add_argument("--sign-key", default=os.environ.get("OKAI_SIM_SIGN_KEY"))
    parser.add_argument("--sign-params", choices=["all", "business"], default="all")
    parser.add_argument("--bolt-seconds", type=float, default=DEFAULT_BOLT_SECONDS)
    parser.add_argument("--delivery-seconds", type=float, default=DEFAULT_DELIVERY_SECONDS)
    parser.add_argument("--no-record", action="store_true", help="do not keep a record of calls (long runs)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every call takes")
    parser.add_argument("--max-in-flight", type=int, help="refuse more calls at once than this (HTTP 429)")
    parser.add_argument("--rate", type=float, help="allow this many calls a second (a token bucket; HTTP 429)")
    parser.add_argument("--quota", help="calls per period, N or N/second|minute|hour|day|month (HTTP 429)")
    args = parser.parse_args(argv)
    sim = OkaiSimulator(
        user_key=args.user_key,
        sign_key=args.sign_key,
        sign_params=args.sign_params,
        devices=args.devices,
        bolt_seconds=args.bolt_seconds,
        delivery_seconds=args.delivery_seconds,
        record_calls=not args.no_record,
        latency=args.latency,
        limits=parse_profile({"max_in_flight": args.max_in_flight, "rate": args.rate, "quota": args.quota}),
    )
    port = args.port or _free_port(args.host)
    server = uvicorn.Server(
        uvicorn.Config(
            with_control(sim.app, sim.limits),
            host=args.host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                if server.should_exit:
                    return
                await anyio.sleep(0.01)
            signing = "on" if args.sign_key else "off"
            sys.stdout.write(f"OKAI simulator on http://{args.host}:{port}{sim.base_path} (signing {signing})\n")
            sys.stdout.write("scooters: " + " ".join(sim.fleet.imeis) + "\n")
            sys.stdout.write(f"limits: GET/PUT http://{args.host}:{port}{CONTROL_PATH}\n")
            sys.stdout.flush()

    anyio.run(serve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
