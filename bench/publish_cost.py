"""CPU per QoS 1 retained message: aiomqtt's awaited ``publish`` against ``twin.publisher.Publisher``.

    python -m bench.publish_cost [--messages 5000]

Both publish the same messages with 64 unacknowledged at once to a private mosquitto; the figure
is process CPU time per message, PUBACK handling included. This is why the bridge publishes
through ``Publisher`` (see ``twin/publisher.py``).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import aiomqtt
import anyio

from bench.common import private_broker
from twin.publisher import Publisher

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
WINDOW = 64


async def awaited(port: int, messages: int) -> float:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY) as c:
        c.pending_calls_threshold = WINDOW * 2
        send, receive = anyio.create_memory_object_stream[int](messages)

        async def worker() -> None:  # a fixed pool: no task per message on our side
            async for i in receive:
                await c.publish(f"bench/a/{i % 100}", b"x" * 300, qos=1, retain=True)

        started = time.process_time()
        async with anyio.create_task_group() as tg:
            for _ in range(WINDOW):
                tg.start_soon(worker)
            for i in range(messages):
                send.send_nowait(i)
            send.close()
        return (time.process_time() - started) / messages


async def windowed(port: int, messages: int) -> float:
    publisher = Publisher(window=WINDOW)
    client = aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY)
    async with publisher.prepare(client):
        publisher.attach(client)
        started = time.process_time()
        for i in range(messages):
            publisher.send(f"bench/p/{i % 100}", b"x" * 300, retain=True)
        await publisher.drained()
        return (time.process_time() - started) / messages


async def main(messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="locktwin-pub-") as tmp, private_broker(Path(tmp)) as broker:
        for _ in range(2):  # interleaved, twice
            a = await awaited(broker.port, messages)
            w = await windowed(broker.port, messages)
            print(f"aiomqtt awaited publish: {a * 1e6:.0f} us/message   Publisher: {w * 1e6:.0f} us/message")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    anyio.run(main, parser.parse_args().messages)
