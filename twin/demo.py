"""``locktwin demo``: the whole thing on embedded defaults.

A broker (the installed ``mosquitto``, else the embedded pure-Python amqtt), every registered
vendor's simulator with a small fleet, one bridge per vendor on SQLite files under the data folder,
and a live table. A second start finds its twins again (the stores and the broker's retained
messages live under the data folder). Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import anyio

from twin.adapter import Adapter
from twin.asgi import serve_asgi
from twin.broker import MosquittoBroker, free_port
from twin.config import LocktwinSettings, MqttSettings, load_vendor_settings
from twin.operator_cli import OperatorClient
from twin.registry import ADAPTERS, load_adapter_class
from twin.runtime import BridgeRuntime

__all__ = ["run_demo"]

log = logging.getLogger("locktwin.demo")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_demo(*, data_dir: Path, devices: int, port: int | None, live: bool, broker: str = "auto") -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir.mkdir(parents=True, exist_ok=True)
    with suppress(KeyboardInterrupt):
        anyio.run(_demo, data_dir, devices, port, live, broker)
    print("\nlocktwin demo stopped; twins are kept in", data_dir)
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
        broker.workdir.mkdir(parents=True, exist_ok=True)
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
    served = await stack.enter_async_context(serve_asgi(kit.app))
    settings = load_vendor_settings(cls.settings_model, kit.settings(served.url))
    runtime = BridgeRuntime(
        adapter=cls(settings=settings), mqtt=mqtt, data_dir=data_dir, base_topic="locktwin", client_id=None
    )
    print(f"{cls.vendor:>9}: simulator on {served.url}, devices {', '.join(kit.device_ids)}")
    return runtime, list(kit.device_ids)


def _banner(port: int, examples: dict[str, str]) -> None:
    pub = f"mosquitto_pub -p {port}"
    print("\nTry, in another terminal:")
    print(f"  mosquitto_sub -p {port} -v -t 'locktwin/#'")
    for vendor, device in examples.items():
        print(f"  {pub} -t locktwin/{vendor}/{device}/set -m UNLOCK")
        print(f'  {pub} -t locktwin/{vendor}/{device}/set -m \'{{"lock":"LOCKED","transaction":"t-1"}}\'')
    env = f"LOCKTWIN_MQTT__URL=mqtt://127.0.0.1:{port}"
    if examples:
        vendor, device = next(iter(examples.items()))
        print(f"  {env} locktwin unlock {vendor}/{device} --wait")
        print(f"  {env} locktwin twin {vendor}/{device}")
    print(f"  {env} locktwin watch")
    print("Ctrl-C stops everything.\n")


async def _demo(data_dir: Path, devices: int, port: int | None, live: bool, broker: str) -> None:
    port = port or (1883 if _port_free(1883) else free_port())
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
        http = f"http://127.0.0.1:{fleet.settings.http_port}"
        print(f"{'fleet':>9}: service on {http} (GET /query?q=lock%3DLOCKED, GBFS {http}/gbfs/gbfs.json)")
        _banner(port, examples)
        print(f"  LOCKTWIN_MQTT__URL=mqtt://127.0.0.1:{port} locktwin fleet query 'vendor=okai,segway lock=LOCKED'\n")
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
            print(f"{len(runtimes)} bridges online")
            if live:
                watcher = OperatorClient(settings=LocktwinSettings(mqtt=mqtt), client_id="locktwin-demo-watch")
                tg.start_soon(watcher.watch, "+/+")
