"""Commands the fleet service sends to the bridges, and their answers, matched by transaction.

A command goes out like any client's: ``/set`` or ``/request/{action}`` with a ``transaction``
derived from what it belongs to (a job run and the device, or a rule command's number), so that it
is the same after a restart; ``issued_at`` and ``expires_in`` (the execution timeout), and on MQTT
v5 the same Message Expiry Interval, a Response Topic in the service's own reply tree and the
transaction as Correlation Data. The final answer comes on that topic (or, on MQTT 3.1.1, on the
device's response topic); the device's retained twin, which the bridge publishes before it
answers, names the transaction and status of its latest command and settles it too. No final
answer by the expiry plus a grace period: ``timeout``.

A command sent again after a restart carries its original ``issued_at``: a bridge that has it
answers from its store (no second vendor call), one that never got it refuses it as expired once
that time has passed. Its Message Expiry Interval is then at least the grace period, so that the
bridge gets to say so.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from twin.fleet.clock import iso
from twin.fleet.index import CommandView

__all__ = ["CommandSender", "FleetCommand", "Outcome", "device_digest"]

log = logging.getLogger(__name__)

FINAL = frozenset({"succeeded", "failed", "expired", "superseded", "rejected"})
Publish = Callable[[str, bytes, Properties | None], None]


def device_digest(vendor: str, device: str) -> str:
    """16 hex characters naming a device in a transaction (device ids may be 128 characters long)."""
    return hashlib.blake2b(f"{vendor}/{device}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    #: a final status of the contract, or "timeout" (no final answer in time)
    status: str
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class FleetCommand:
    vendor: str
    device: str
    kind: Literal["set", "action"]
    name: str
    #: the desired value (set) or the arguments (action)
    value: Any
    transaction: str
    issued_at: float
    timeout: float
    on_final: Callable[[FleetCommand, Outcome], None]
    deadline: float = 0.0
    accepted: bool = field(default=False)


class CommandSender:
    def __init__(self, *, base: str, reply_topic: str | None, publish: Publish, grace: float) -> None:
        self.base = base
        #: None on MQTT 3.1.1: answers come on the devices' own response topics
        self.reply_topic = reply_topic
        self.publish = publish
        self.grace = grace
        self.outstanding: dict[str, FleetCommand] = {}
        #: (deadline, transaction), the earliest first; entries of settled commands are skipped
        self._deadlines: list[tuple[float, str]] = []
        self._wake = anyio.Event()

    def topic(self, cmd: FleetCommand) -> str:
        leaf = "set" if cmd.kind == "set" else f"request/{cmd.name}"
        return f"{self.base}/{cmd.vendor}/{cmd.device}/{leaf}"

    def send(self, cmd: FleetCommand, *, again: bool = False) -> None:
        """Publish ``cmd`` (``again``: after a restart, with its original ``issued_at``)."""
        body: dict[str, Any] = {cmd.name: cmd.value} if cmd.kind == "set" else dict(cmd.value or {})
        body.update(transaction=cmd.transaction, issued_at=iso(cmd.issued_at), expires_in=cmd.timeout)
        now = time.time()
        left = cmd.issued_at + cmd.timeout - now
        cmd.deadline = max(cmd.issued_at + cmd.timeout, now) + self.grace
        props = None
        if self.reply_topic is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = max(1, math.ceil(max(left, self.grace) if again else left))
            props.ResponseTopic = self.reply_topic
            props.CorrelationData = cmd.transaction.encode()
        self.outstanding[cmd.transaction] = cmd
        if not self._deadlines or cmd.deadline < self._deadlines[0][0]:
            self._wake.set()
        heapq.heappush(self._deadlines, (cmd.deadline, cmd.transaction))
        self.publish(self.topic(cmd), orjson.dumps(body), props)

    def forget(self, transaction: str) -> None:
        self.outstanding.pop(transaction, None)

    # -- answers ---------------------------------------------------------------------------------
    def on_answer(self, payload: bytes) -> bool:
        """An answer on the reply topic (or a device's response topic); True when it was ours."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(doc, dict) or not isinstance(doc.get("transaction"), str):
            return False
        cmd = self.outstanding.get(doc["transaction"])
        if cmd is None:
            return False
        status = doc.get("status")
        if status == "accepted":
            cmd.accepted = True
        elif status in FINAL:
            error = doc.get("error")
            self._settle(cmd, Outcome(status, error if isinstance(error, dict) else None))
        return True

    def on_twin(self, command: CommandView | None) -> None:
        """A device's twin: its latest command may be one of ours, settled."""
        if command is None or command.transaction is None or command.status not in FINAL:
            return
        cmd = self.outstanding.get(command.transaction)
        if cmd is not None:
            error = dict(command.error) if command.error is not None else None
            self._settle(cmd, Outcome(command.status, error))

    def _settle(self, cmd: FleetCommand, outcome: Outcome) -> None:
        if self.outstanding.pop(cmd.transaction, None) is None:
            return
        try:
            cmd.on_final(cmd, outcome)
        except Exception:  # one owner's failure must not lose the other answers
            log.exception("handling the answer to %s failed", cmd.transaction)

    # -- timeouts --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Time out commands past their deadline (until cancelled)."""
        while True:
            now = time.time()
            while self._deadlines and self._deadlines[0][0] <= now:
                deadline, transaction = heapq.heappop(self._deadlines)
                cmd = self.outstanding.get(transaction)
                if cmd is None or cmd.deadline != deadline:
                    continue  # settled, or sent again with a later deadline
                self._settle(
                    cmd,
                    Outcome(
                        "timeout",
                        {
                            "code": "DEVICE_TIMEOUT",
                            "message": (
                                f"no final answer within {cmd.timeout:g}s and {self.grace:g}s of grace"
                                + ("" if cmd.accepted else "; the bridge never accepted it (is it running?)")
                            ),
                        },
                    ),
                )
            wait = self._deadlines[0][0] - time.time() if self._deadlines else 3600.0
            self._wake = anyio.Event()
            with anyio.move_on_after(max(0.01, wait)):
                await self._wake.wait()
