"""Commands for people and scripts: lock, unlock, get, request, twin, watch.

Exit codes follow the outcome so shell scripts can rely on them::

    0  succeeded (or accepted, without --wait)     4  expired
    1  failed                                      5  superseded
    2  usage or configuration error                6  no answer before --timeout
    3  rejected                                    7  no connection to the broker

The client comes from :func:`twin.mqtt.mqtt_client` with the same ``[mqtt]`` settings as the
bridges (TLS and client certificates included); a connection that fails is one line on stderr.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import anyio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twin.config import LocktwinSettings
from twin.mqtt import mqtt_client

__all__ = [
    "EXIT_CODES",
    "EXIT_NO_BROKER",
    "EXIT_TIMEOUT",
    "OperatorClient",
    "parse_arguments",
    "parse_target",
]

EXIT_CODES = {"succeeded": 0, "accepted": 0, "failed": 1, "rejected": 3, "expired": 4, "superseded": 5}
EXIT_TIMEOUT = 6
#: seconds a command sent by the CLI may take, unless --expires-in says otherwise
DEFAULT_EXPIRES_IN = 30.0
EXIT_NO_BROKER = 7
FINAL = {"succeeded", "failed", "expired", "superseded", "rejected"}


def parse_target(target: str) -> tuple[str, str]:
    vendor, sep, device = target.partition("/")
    if not sep or not vendor or not device or "/" in device:
        raise ValueError(f"expected <vendor>/<device>, got {target!r}")
    return vendor, device


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists), else text."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return args


def describe(answer: dict[str, Any]) -> str:
    error = answer.get("error") or {}
    text = f"{answer['status']}"
    if error:
        text += f": {error.get('code')} {error.get('message', '')}".rstrip()
        if error.get("vendor_code") or error.get("vendor_message"):
            text += f" (vendor {error.get('vendor_code') or ''} {error.get('vendor_message') or ''})".replace("  ", " ")
    return text


class OperatorClient:
    def __init__(self, *, settings: LocktwinSettings, client_id: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or f"locktwin-cli-{uuid.uuid4().hex[:8]}"

    def _client(self) -> aiomqtt.Client:
        return mqtt_client(self.settings.mqtt, identifier=self.client_id)

    def topic(self, vendor: str, device: str, leaf: str) -> str:
        return f"{self.settings.base_topic}/{vendor}/{device}/{leaf}"

    async def command(
        self,
        vendor: str,
        device: str,
        leaf: str,
        body: dict[str, Any],
        *,
        wait: bool,
        timeout: float,
        expires_in: float | None = None,
    ) -> int:
        """Send one command and print its answers; returns the exit code.

        A command (not a ``get``) says when it was issued and how long it may take, in its payload
        and as its MQTT 5 Message Expiry Interval: one that waits in the broker for a bridge that is
        away (its persistent session) is refused ``EXPIRED`` or dropped by the broker, never run late.
        """
        body = {"transaction": f"cli-{uuid.uuid4().hex[:12]}", **body}
        props = None
        if leaf != "get":
            lifetime = DEFAULT_EXPIRES_IN if expires_in is None else expires_in
            body["issued_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            body["expires_in"] = lifetime
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = max(1, math.ceil(lifetime))
        suffix = leaf.rsplit("/", 1)[-1]
        async with self._client() as client:
            await client.subscribe(self.topic(vendor, device, f"response/{suffix}"), qos=1)
            await client.publish(self.topic(vendor, device, leaf), json.dumps(body), qos=1, properties=props)
            with anyio.move_on_after(timeout):
                async for message in client.messages:
                    answer = json.loads(bytes(message.payload))
                    if answer.get("transaction") != body["transaction"]:
                        continue
                    print(describe(answer), file=sys.stderr)
                    if answer.get("data") is not None and answer["status"] != "accepted":
                        print(json.dumps(answer["data"], indent=2))
                    if answer["status"] in FINAL or not wait:
                        return EXIT_CODES.get(answer["status"], 1)
        print(f"no answer within {timeout:g}s (is the {vendor} bridge running?)", file=sys.stderr)
        return EXIT_TIMEOUT

    async def retained(self, vendor: str, device: str, leaf: str, *, timeout: float) -> bytes | None:
        async with self._client() as client:
            await client.subscribe(self.topic(vendor, device, leaf), qos=1)
            with anyio.move_on_after(timeout):
                async for message in client.messages:
                    return message.payload if isinstance(message.payload, bytes) else None
        return None

    async def watch(self, pattern: str, *, once: bool = False, header: list[str] | None = None) -> int:
        """A live table of devices, redrawn in place when something changed (at most 5 times a
        second), or printed once with ``once`` after the retained states came in. ``header``: lines
        shown above the table (the demo keeps its commands there)."""
        rows: dict[str, dict[str, Any]] = {}
        base = self.settings.base_topic
        clear = sys.stdout.isatty() and not once
        async with self._client() as client:
            await client.subscribe(f"{base}/{pattern}/state", qos=1)
            await client.subscribe(f"{base}/{pattern}/twin", qos=1)
            changed = anyio.Event()

            async def painter() -> None:
                nonlocal changed
                while True:
                    await changed.wait()
                    changed = anyio.Event()
                    _paint(rows, clear=clear, header=header)
                    await anyio.sleep(0.2)  # changes meanwhile are drawn together

            async with anyio.create_task_group() as tg:
                if not once:
                    tg.start_soon(painter)
                # --once: the retained messages come at once after subscribing; the table is
                # complete when nothing new came for a moment (or after 2 s at most)
                with anyio.move_on_after(2 if once else float("inf")):
                    messages = client.messages.__aiter__()
                    while True:
                        with anyio.move_on_after(0.3 if once and rows else float("inf")) as quiet:
                            message = await messages.__anext__()
                        if quiet.cancelled_caught:
                            break
                        _, vendor, device, leaf = message.topic.value.rsplit("/", 3)
                        try:
                            doc = json.loads(bytes(message.payload))
                        except ValueError:
                            continue
                        if not isinstance(doc, dict):
                            continue
                        row = rows.setdefault(f"{vendor}/{device}", {})
                        if leaf == "state":
                            row.update(lock=doc.get("lock"), online=doc.get("online"), battery=doc.get("battery"))
                        elif isinstance(doc.get("command"), dict):
                            cmd = doc["command"]
                            row.update(command=f"{cmd.get('name')}={cmd.get('value')}", status=cmd.get("status"))
                        changed.set()
                tg.cancel_scope.cancel()
        if once:
            _paint(rows, clear=False, header=header)
        return 0


def _paint(rows: dict[str, dict[str, Any]], *, clear: bool, header: list[str] | None = None) -> None:
    title = f"{'DEVICE':<34} {'LOCK':<10} {'ONLINE':<7} {'BATTERY':>7}  {'LAST COMMAND':<22} STATUS"
    lines = [*(header or []), title, "-" * len(title)]
    for name in sorted(rows):
        r = rows[name]
        battery = "" if r.get("battery") is None else f"{r['battery']:.0f}%"
        online = "?" if r.get("online") is None else ("yes" if r["online"] else "no")
        lines.append(
            f"{name:<34} {r.get('lock') or '?':<10} {online:<7} {battery:>7}  "
            f"{r.get('command', ''):<22} {r.get('status', '')}"
        )
    if clear:
        sys.stdout.write("\x1b[H\x1b[2J")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
