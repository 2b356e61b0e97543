"""Push intake: signed Segway status pushes/s accepted and reflected on the retained ``state``.

    python -m bench.push [--devices 50] [--per-device 40] [--profile]

Measured: a Segway bridge (``BridgeRuntime`` in-process, push intake on, no polling) on a private
mosquitto; one sender per device posts signed form-encoded status pushes one after the other (each
with a higher odometer), ``devices`` in flight. The time runs until every push was answered 200
**and** every device's retained ``state`` shows its last odometer (a subscriber to
``locktwin/segway/+/state``).

Floor: a bare endpoint of the same HTTP server stack (Starlette + uvicorn through
``twin.asgi.serve_asgi``, same ``limit_concurrency``) that reads the body and answers 200, with the
same HTTP client (``twin.http.make_async_client``), the same bodies and the same concurrency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import aiomqtt
import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.command import NODELAY
from bench.common import Report, private_broker
from bench.profiling import profiled
from bridges.segway.adapter import SegwayAdapter
from bridges.segway.settings import SegwaySettings
from bridges.segway.simulator import DEMO_CLIENT_SECRET, sign_push
from twin.asgi import serve_asgi
from twin.config import MqttSettings
from twin.homeassistant import HomeAssistantSettings
from twin.http import make_async_client
from twin.runtime import BridgeRuntime

CLIENT_ID = "E20081"
STATUS = "/v2/vehicle/status"


def body(device: str, odometer: int) -> str:
    fields = {
        "iotCode": device,
        "online": "true",
        "locked": "true",
        "powerPercent": str(50 + odometer % 50),
        "odometer": str(odometer),
        "statusUtcTime": str(int(time.time())),
        "platformCode": CLIENT_ID,
    }
    fields["signature"] = sign_push(fields, DEMO_CLIENT_SECRET)
    return urlencode(fields)


async def send_all(http: httpx.AsyncClient, url: str, devices: list[str], per_device: int, start: int) -> None:
    async def sender(device: str) -> None:
        for i in range(per_device):
            answer = await http.post(
                url, content=body(device, start + i), headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
            if answer.status_code != 200:
                raise RuntimeError(f"push answered {answer.status_code}: {answer.text}")

    async with anyio.create_task_group() as tg:
        for device in devices:
            tg.start_soon(sender, device)


async def watch(port: int, latest: dict[str, int], changed: Callable[[], None]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, socket_options=NODELAY, max_queued_incoming_messages=0) as client:
        await client.subscribe("locktwin/segway/+/state", qos=1)
        async for message in client.messages:
            state = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            device = message.topic.value.split("/")[2]
            if "odometer_m" in state:
                latest[device] = int(state["odometer_m"])
            changed()


async def bridge_rate(port: int, devices: list[str], per_device: int, profile: bool, data: Path) -> tuple[float, int]:
    settings = SegwaySettings(
        client_id=CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,  # type: ignore[arg-type]
        base_url="http://127.0.0.1:9",  # never called: no polling, no commands
        devices=devices,
        poll_interval=None,
        push_enabled=True,
    )
    adapter = SegwayAdapter(settings=settings)
    runtime = BridgeRuntime(
        adapter=adapter,
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}", client_id=f"bench-{uuid.uuid4().hex[:6]}"),
        data_dir=data,
        homeassistant=HomeAssistantSettings(enabled=False),
    )
    latest: dict[str, int] = {}
    box = [anyio.Event()]

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, port, latest, lambda: box[0].set())  # noqa: PLW0108 - box[0] is replaced
        tg.start_soon(runtime.run)
        with anyio.fail_after(30):
            await runtime.connected.wait()
        assert adapter.push_address is not None
        url = adapter.push_address.url + STATUS
        async with make_async_client(timeout=30) as http:
            await send_all(http, url, devices, 2, 1)  # warm-up
            target = 1000 + per_device - 1
            with profiled("push", enabled=profile):
                started = time.perf_counter()
                await send_all(http, url, devices, per_device, 1000)
                with anyio.fail_after(60):
                    while any(latest.get(d) != target for d in devices):
                        box[0] = anyio.Event()
                        await box[0].wait()
                elapsed = time.perf_counter() - started
        stored = adapter.push_stats.stored
        tg.cancel_scope.cancel()
    return len(devices) * per_device / elapsed, stored


async def floor_rate(devices: list[str], per_device: int, limit: int) -> float:
    async def ok(request: Request) -> Response:
        await request.body()
        return JSONResponse({"code": 0, "message": "success"})

    app = Starlette(routes=[Route(STATUS, ok, methods=["POST"])])
    async with serve_asgi(app, limit_concurrency=limit) as served, make_async_client(timeout=30) as http:
        url = served.url + STATUS
        await send_all(http, url, devices, 2, 1)
        started = time.perf_counter()
        await send_all(http, url, devices, per_device, 1000)
        return len(devices) * per_device / (time.perf_counter() - started)


async def measure(devices: int, per_device: int, report: Report, profile: bool = False) -> None:
    ids = [f"SEG{i:06d}" for i in range(devices)]
    limit = SegwaySettings.model_fields["push_max_concurrency"].default
    with tempfile.TemporaryDirectory(prefix="locktwin-push-broker-") as tmp, private_broker(Path(tmp)) as broker:
        measured, stored = await bridge_rate(broker.port, ids, per_device, profile, Path(tmp) / "data")
    bare = await floor_rate(ids, per_device, limit)
    report.value("push: pushes stored by the intake (incl. warm-up)", stored)
    report.ratio(f"push intake, {devices} in flight", measured, bare, ">= 0.5", " push/s")


async def main(devices: int, per_device: int, profile: bool) -> None:
    report = Report(name="push")
    await measure(devices, per_device, report, profile)
    report.write()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--per-device", type=int, default=40)
    parser.add_argument("--profile", action="store_true", help="write a pyinstrument profile to bench/results")
    args = parser.parse_args()
    anyio.run(main, args.devices, args.per_device, args.profile)
