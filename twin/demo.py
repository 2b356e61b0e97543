"""``locktwin demo``: the whole thing on embedded defaults.

A broker (the installed ``mosquitto``, else the embedded pure-Python amqtt), every registered
vendor's simulator with a small fleet, one bridge per vendor on SQLite files under the data folder,
and a live table. A second start finds its twins again (the stores and the broker's retained
messages live under the data folder). Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from twin.adapter import Adapter
from twin.asgi import serve_asgi
from twin.broker import MosquittoBroker, free_port
from twin.config import LocktwinSettings, MqttSettings, load_vendor_settings
from twin.datalock import DataDirLock
from twin.operator_cli import OperatorClient
from twin.registry import ADAPTERS, load_adapter_class
from twin.runtime import BridgeRuntime
from twin.simlimits import CONTROL_PATH, with_control

__all__ = [
    "banner_lines",
    "choose_port",
    "locktwin_command",
    "run_demo",
    "start_embedded_broker",
]

log = logging.getLogger("locktwin.demo")

#: the demo's broker port: MQTT's own, else this fixed fallback
DEFAULT_PORT = 1883
FALLBACK_PORT = 1884


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_demo(*, data_dir: Path, devices: int, port: int | None, live: bool, broker: str = "auto") -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    banner: list[str] = []
    with DataDirLock(data_dir, what="locktwin demo"), suppress(KeyboardInterrupt):
        anyio.run(_demo, data_dir, devices, port, live, broker, banner)
    print("\nlocktwin demo stopped; twins are kept in", data_dir)
    if banner:  # the live table wiped the first banner off the screen
        print("Next time, the same lines work again:\n" + "\n".join(banner))
    return 0


async def start_embedded_broker(stack: AsyncExitStack, port: int) -> MqttSettings:
    """amqtt, pure Python from PyPI: MQTT 3.1.1 only, good enough for a demo, not for production."""
    from amqtt.broker import Broker  # type: ignore[import-untyped]

    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    embedded = Broker(config)
    await embedded.start()
    stack.push_async_callback(embedded.shutdown)
    return MqttSettings(url=f"mqtt://127.0.0.1:{port}", protocol="3.1.1")


async def _start_broker(stack: AsyncExitStack, data_dir: Path, port: int, kind: str) -> MqttSettings:
    if kind == "mosquitto" or (kind == "auto" and MosquittoBroker.available()):
        broker = MosquittoBroker(port=port, workdir=data_dir / "broker")
        broker.start()
        stack.callback(broker.stop)
        print(f"broker: mosquitto on 127.0.0.1:{port} (data in {broker.workdir})")
        return MqttSettings(url=f"mqtt://127.0.0.1:{port}")
    mqtt = await start_embedded_broker(stack, port)
    print(f"broker: embedded amqtt on 127.0.0.1:{port} (MQTT 3.1.1 only; install mosquitto for production)")
    return mqtt


async def _start_vendor(
    stack: AsyncExitStack, cls: type[Adapter[Any]], devices: int, mqtt: MqttSettings, data_dir: Path
) -> tuple[BridgeRuntime, list[str]] | None:
    kit = cls.simulator(devices=devices)
    if kit is None:
        return None
    # the vendor's limits are off; PUT {"max_in_flight": 64, "rate": 50, "quota": "1000/day"} switches them
    app = kit.app if kit.limits is None else with_control(kit.app, kit.limits)
    served = await stack.enter_async_context(serve_asgi(app))
    settings = load_vendor_settings(cls.settings_model, kit.settings(served.url))
    runtime = BridgeRuntime(
        adapter=cls(settings=settings), mqtt=mqtt, data_dir=data_dir, base_topic="locktwin", client_id=None
    )
    print(f"{cls.vendor:>9}: simulator on {served.url}, devices {', '.join(kit.device_ids)}")
    if kit.limits is not None:
        print(f"{'':>9}  its limits (off): GET/PUT {served.url}{CONTROL_PATH}")
    return runtime, list(kit.device_ids)


async def _start_console(stack: AsyncExitStack, mqtt: MqttSettings) -> str:
    """The operator console; the demo's broker is anonymous, so it takes any username and no password."""
    from twin.console import ConsoleSettings, serve_console

    hint = "Demo broker: any username, empty password (the broker is anonymous, so everyone may unlock)."
    settings = ConsoleSettings(port=8080 if _port_free(8080) else 0, login_hint=hint)
    _, served = await stack.enter_async_context(serve_console(settings=settings, mqtt=mqtt, base="locktwin"))
    return served.url


def choose_port(requested: int | None, *, is_free: Callable[[int], bool] = _port_free) -> int:
    """MQTT's own port, else a fixed fallback, so that the lines the demo prints stay right from one
    start to the next; a random free port only when both are taken (said so)."""
    if requested:
        return requested
    for port in (DEFAULT_PORT, FALLBACK_PORT):
        if is_free(port):
            return port
    port = free_port()
    print(f"ports {DEFAULT_PORT} and {FALLBACK_PORT} are taken: the broker takes {port} this time")
    return port


def locktwin_command() -> str:
    """How to run this ``locktwin`` from a fresh shell: its name when it is on the PATH, else its path."""
    here = Path(sys.executable).with_name("locktwin")
    found = shutil.which("locktwin")
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return "locktwin"
    if here.exists():
        try:
            relative = here.absolute().relative_to(Path.cwd())
        except ValueError:
            return str(here.absolute())
        return str(relative) if "/" in str(relative) else f"./{relative}"
    return f"{sys.executable} -m twin.cli"


def banner_lines(
    port: int, examples: dict[str, str], *, console: str | None = None, fleet: str | None = None
) -> list[str]:
    """The commands to try against this demo, as they run in another terminal."""
    cli = locktwin_command()
    pub = "mosquitto_pub" if port == DEFAULT_PORT else f"mosquitto_pub -p {port}"
    sub = "mosquitto_sub" if port == DEFAULT_PORT else f"mosquitto_sub -p {port}"
    env = "" if port == DEFAULT_PORT else f"LOCKTWIN_MQTT__URL=mqtt://127.0.0.1:{port} "
    lines = []
    if console is not None:
        lines.append(f"console: {console}  (any username, empty password: the demo broker is anonymous)")
    if fleet is not None:
        lines.append(f"fleet service: {fleet} (GET /query?q=lock%3DLOCKED, GBFS {fleet}/gbfs/gbfs.json)")
    lines += [f"broker on 127.0.0.1:{port}; try, in another terminal:", f"  {sub} -v -t 'locktwin/#'"]
    for vendor, device in examples.items():
        lines.append(f"  {pub} -t locktwin/{vendor}/{device}/set -m UNLOCK")
    if examples:
        vendor, device = next(iter(examples.items()))
        lines.append(f'  {pub} -t locktwin/{vendor}/{device}/set -m \'{{"lock":"LOCKED","transaction":"t-1"}}\'')
        lines.append(f"  {env}{cli} unlock {vendor}/{device} --wait")
        lines.append(f"  {env}{cli} twin {vendor}/{device}")
    if fleet is not None:
        lines.append(f"  {env}{cli} fleet query 'vendor=okai,segway lock=LOCKED'")
    lines.append(f"  {env}{cli} watch")
    return lines


async def _demo(data_dir: Path, devices: int, port: int | None, live: bool, broker: str, banner: list[str]) -> None:
    port = choose_port(port)
    async with AsyncExitStack() as stack:
        mqtt = await _start_broker(stack, data_dir, port, broker)
        runtimes: list[BridgeRuntime] = []
        examples: dict[str, str] = {}
        for vendor in sorted(ADAPTERS):
            try:
                started = await _start_vendor(stack, load_adapter_class(vendor), devices, mqtt, data_dir)
            except Exception as exc:  # one vendor's trouble must not stop the demo
                print(f"{vendor:>9}: not started ({type(exc).__name__}: {exc})")
                continue
            if started is not None:
                runtimes.append(started[0])
                examples[vendor] = started[1][0]
        if not runtimes:
            print("no vendor has a simulator yet", file=sys.stderr)
            return
        from twin.fleet.demo import demo_fleet

        fleet = demo_fleet(mqtt, data_dir)
        console = await _start_console(stack, mqtt)
        banner[:] = banner_lines(port, examples, console=console, fleet=f"http://127.0.0.1:{fleet.settings.http_port}")
        print("\n" + "\n".join(banner) + "\nCtrl-C stops everything.\n", flush=True)
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            for runtime in runtimes:
                tg.start_soon(runtime.run)
            tg.start_soon(fleet.run)
            for runtime in runtimes:
                await runtime.connected.wait()
            await fleet.ready.wait()  # its HTTP API listens and its index holds the fleet: queries answer
            print(f"{len(runtimes)} bridges online")
            if live:
                watcher = OperatorClient(settings=LocktwinSettings(mqtt=mqtt), client_id="locktwin-demo-watch")
                tg.start_soon(partial(watcher.watch, "+/+", header=[*banner, ""]))
