"""The demo's embedded broker (amqtt, MQTT 3.1.1) runs a bridge end to end."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import anyio
import pytest

from tests.fake_adapter import FakeAdapter
from twin.broker import free_port
from twin.demo import start_embedded_broker
from twin.homeassistant import HomeAssistantSettings
from twin.runtime import BridgeRuntime

pytestmark = pytest.mark.anyio


async def test_bridge_on_embedded_broker(tmp_path: Path) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        mqtt = await start_embedded_broker(stack, port)
        adapter = FakeAdapter()
        runtime = BridgeRuntime(
            adapter=adapter,
            mqtt=mqtt,
            data_dir=tmp_path,
            base_topic="emb",
            homeassistant=HomeAssistantSettings(enabled=False),
        )
        async with anyio.create_task_group() as tg, aiomqtt.Client("127.0.0.1", port) as client:
            tg.start_soon(runtime.run)
            with anyio.fail_after(20):
                await runtime.connected.wait()
            await client.subscribe("emb/fake/d1/#", qos=1)
            await client.publish("emb/fake/d1/set", json.dumps({"lock": "UNLOCKED", "transaction": "e1"}), qos=1)
            statuses = []
            with anyio.fail_after(20):
                async for message in client.messages:
                    if message.topic.value == "emb/fake/d1/response/set":
                        statuses.append(json.loads(bytes(message.payload))["status"])  # type: ignore[arg-type]
                        if statuses[-1] == "succeeded":
                            break
            assert statuses == ["accepted", "succeeded"]
            assert adapter.calls == [("d1", "unlock")]
            tg.cancel_scope.cancel()
