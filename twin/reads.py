"""Status reads that are not part of a command: background polling and ``/get``.

Both go through the vendor-call gate like every call, and hold at most its share of read slots
(half the limit), so that reads never keep a command from a slot beyond one read's time. A failed
read is logged and changes nothing, except that a device the vendor says is offline reads
``online: false``.

``/get`` of one device are single-flight and rate-limited: while a read of the device is under way
(or waiting to start), further ``/get`` join it and are answered with it; a read starts at least
``get_interval`` seconds after the last one ended, so a flood of ``/get`` makes one vendor read per
``get_interval`` at most, per device, and every answer still reflects a read made after it asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from contracts.errors import ErrorCode, ErrorInfo
from twin.adapter import ReportedPatch, VendorError
from twin.gate import Priority, VendorGate
from twin.outbound import Outbound, ReplyTo
from twin.store import StoreUnavailable

__all__ = ["MAX_WAITING_GETS", "StatusReads"]

log = logging.getLogger(__name__)

#: /get of one device waiting for its read; more are refused DEVICE_BUSY (retryable)
MAX_WAITING_GETS = 10_000

Waiter = tuple[str | None, ReplyTo | None]


class StatusReads:
    def __init__(
        self,
        *,
        gate: VendorGate,
        read_status: Callable[[str], Awaitable[ReportedPatch]],
        observe: Callable[[str, ReportedPatch, str], bool],
        out: Outbound,
        get_interval: float = 1.0,
    ) -> None:
        self.gate = gate
        self.read_status = read_status
        self.observe = observe
        self.out = out
        self.get_interval = get_interval
        #: per device with a /get read under way: who waits for it
        self._waiting: dict[str, list[Waiter]] = {}
        #: per device: when its last /get read ended (monotonic)
        self._read_at: dict[str, float] = {}

    async def read(self, device: str) -> ReportedPatch | None:
        """A status read for polling (the caller holds a read slot): None when it failed."""
        try:
            patch = await self.gate.call(
                lambda: self.read_status(device), operation="read_status", priority=Priority.READ, device=device
            )
        except VendorError as exc:
            log.info("status read of %s failed: %s %s", device, exc.info.code, exc.info.message)
            if exc.info.code == ErrorCode.DEVICE_OFFLINE:
                return ReportedPatch(values={"online": False})
            return None
        return patch

    async def serve_get(self, device: str, transaction: str | None, reply: ReplyTo | None) -> None:
        """Answer a ``/get``: read now (or join the read under way, or take one that just ended),
        merge, answer with the twin (or the vendor's error)."""
        waiting = self._waiting.get(device)
        if waiting is not None:
            if len(waiting) >= MAX_WAITING_GETS:
                busy = ErrorInfo.of(ErrorCode.DEVICE_BUSY, "too many /get of this device at once", retryable=True)
                self.out.get_answer(device, transaction, reply, error=busy)
            else:
                waiting.append((transaction, reply))
            return
        self._waiting[device] = waiting = [(transaction, reply)]
        error: ErrorInfo | None = None
        try:
            read_at = self._read_at.get(device)
            if read_at is not None and (wait := read_at + self.get_interval - time.monotonic()) > 0:
                await anyio.sleep(wait)  # the /get that come meanwhile join this read
            async with self.gate.read_slots:
                patch = await self.gate.call(
                    lambda: self.read_status(device), operation="read_status", priority=Priority.READ, device=device
                )
            self.observe(device, patch, "get")
        except VendorError as exc:
            error = exc.info
        except StoreUnavailable as exc:
            error = ErrorInfo.of(ErrorCode.STORE_UNAVAILABLE, f"the bridge cannot store what it read: {exc}")
        finally:
            del self._waiting[device]
            self._read_at[device] = time.monotonic()
        for txn, to in waiting:
            if error is not None:
                self.out.get_answer(device, txn, to, error=error)
            else:
                self.out.get_answer(device, txn, to, data=self.out.twin_doc(device))
