"""Segway's webhooks in front of two real ``locktwin run segway`` instances on one PostgreSQL database
and a real mosquitto: every signed push goes to the first instance only (a load balancer may send
any push anywhere), and every device's twin shows it, including those the second instance serves,
which receives no push at all. When the second is SIGKILLed, what is pushed for its devices while
its partitions change hands is applied by their next owner. Nothing is left in ``forwarded``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import httpx
import psycopg
import pytest

from bridges.segway.simulator import DEMO_CLIENT_SECRET, SegwaySimulator, sign_push
from tests.faults import pg
from tests.faults.common import Client
from twin.broker import free_port
from twin.shard import Shard
from twin.testing_process import BridgeProcess

pytestmark = pytest.mark.anyio

PARTITIONS = 4


def instance(
    name: str, *, url: str, broker: str, base: str, sim: SegwaySimulator, cloud: str, tmp: Path
) -> tuple[BridgeProcess, str]:
    port = free_port()
    bridge = BridgeProcess(
        vendor="segway",
        broker_url=broker,
        data_dir=tmp / name,
        base=base,
        env={
            "LOCKTWIN_STORE": url,
            "LOCKTWIN_CLUSTER__INSTANCE": name,
            "LOCKTWIN_CLUSTER__PARTITIONS": str(PARTITIONS),
            "LOCKTWIN_CLUSTER__LEASE_SECONDS": "4",
            "LOCKTWIN_SEGWAY_CLIENT_ID": sim.client_id,
            "LOCKTWIN_SEGWAY_CLIENT_SECRET": DEMO_CLIENT_SECRET,
            "LOCKTWIN_SEGWAY_BASE_URL": cloud,
            "LOCKTWIN_SEGWAY_DEVICES": json.dumps(list(sim.fleet.ids)),
            "LOCKTWIN_SEGWAY_POLL_INTERVAL": "off",  # push only: the twins change by the pushes alone
            "LOCKTWIN_SEGWAY_PUSH_ENABLED": "true",
            "LOCKTWIN_SEGWAY_PUSH_PORT": str(port),
        },
        log_path=tmp / f"{name}.log",
    )
    return bridge, f"http://127.0.0.1:{port}"


def partitions_of(client: Client, base: str) -> dict[str, list[int]]:
    out = {}
    for topic, raw in client.retained.items():
        if topic.startswith(f"{base}/bridge/segway/instances/") and topic.endswith("/partitions") and raw:
            doc = json.loads(raw)
            out[doc["instance"]] = doc["partitions"]
    return out


def split_evenly(client: Client, base: str) -> bool:
    held = partitions_of(client, base)
    return len(held.get("a", [])) == 2 and len(held.get("b", [])) == 2


async def push_battery(http: httpx.AsyncClient, sim: SegwaySimulator, device: str, percent: int) -> None:
    fields = {
        "iotCode": device,
        "platformCode": sim.client_id,
        "online": "true",
        "powerPercent": str(percent),
        "statusUtcTime": str(int(time.time())),
    }
    fields["signature"] = sign_push(fields, DEMO_CLIENT_SECRET)
    answer = await http.post(
        "/v2/vehicle/status", content=urlencode(fields), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200, answer.text


def battery(client: Client, device: str) -> Any:
    twin = client.retained_json(device, "twin")
    return None if not isinstance(twin, dict) else twin["reported"].get("battery")


async def test_a_push_to_any_instance_reaches_the_devices_twin(mqtt_broker: str, tmp_path: Path) -> None:
    pg.require()
    sim = SegwaySimulator(client_secret=DEMO_CLIENT_SECRET, devices=8)
    devices = list(sim.fleet.ids)
    base = f"lt-cp-{uuid.uuid4().hex[:8]}"
    with pg.fresh_database() as url:
        async with sim.serve() as served, anyio.create_task_group() as tg:
            cloud = served.url
            client = Client(broker_url=mqtt_broker, base=base, vendor="segway")
            await tg.start(client.run)
            make = lambda n: instance(n, url=url, broker=mqtt_broker, base=base, sim=sim, cloud=cloud, tmp=tmp_path)  # noqa: E731
            (first, first_url), (second, _) = make("a"), make("b")
            try:
                first.start()
                second.start()
                await client.wait_for(lambda: split_evenly(client, base), timeout=40)
                served_by_second = [d for d in devices if Shard.slot(d, PARTITIONS) in partitions_of(client, base)["b"]]
                assert served_by_second  # 8 devices over 4 partitions, two of them the second's

                async with httpx.AsyncClient(base_url=first_url, timeout=10) as http:
                    for n, device in enumerate(devices):
                        await push_battery(http, sim, device, 10 + n)
                    await client.wait_for(
                        lambda: all(battery(client, d) == 10 + n for n, d in enumerate(devices)), timeout=20
                    )

                    second.kill()  # its partitions move to the first at its next tick
                    for n, device in enumerate(devices):
                        if device in served_by_second:
                            await push_battery(http, sim, device, 50 + n)
                    await client.wait_for(
                        lambda: all(
                            battery(client, d) == 50 + n for n, d in enumerate(devices) if d in served_by_second
                        ),
                        timeout=30,
                    )
            finally:
                first.stop()
                second.stop()
                tg.cancel_scope.cancel()
        schema = base.replace("-", "_") + "_segway"

        def left() -> Any:
            with psycopg.connect(url, autocommit=True) as admin:
                return admin.execute(f'SELECT count(*) FROM "{schema}".forwarded').fetchone()

        assert await anyio.to_thread.run_sync(left) == (0,)
