"""Status reads that are not part of a command: background polling and ``/get``.

Both go through the vendor-call gate like every call. A failed read is logged and changes nothing,
except that a device the vendor says is offline reads ``online: false``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from contracts.errors import ErrorCode
from twin.adapter import ReportedPatch, VendorError
from twin.gate import VendorGate
from twin.outbound import Outbound, ReplyTo

__all__ = ["StatusReads"]

log = logging.getLogger(__name__)


class StatusReads:
    def __init__(
        self,
        *,
        gate: VendorGate,
        read_status: Callable[[str], Awaitable[ReportedPatch]],
        observe: Callable[[str, ReportedPatch, str], bool],
        out: Outbound,
    ) -> None:
        self.gate = gate
        self.read_status = read_status
        self.observe = observe
        self.out = out

    async def read(self, device: str) -> ReportedPatch | None:
        """A status read for polling: None when it failed."""
        try:
            patch = await self.gate.call(lambda: self.read_status(device), operation="read_status")
        except VendorError as exc:
            log.info("status read of %s failed: %s %s", device, exc.info.code, exc.info.message)
            if exc.info.code == ErrorCode.DEVICE_OFFLINE:
                return ReportedPatch(values={"online": False})
            return None
        return patch

    async def serve_get(self, device: str, transaction: str | None, reply: ReplyTo | None) -> None:
        """Answer a ``/get``: read now, merge, answer with the twin (or the vendor's error)."""
        try:
            patch = await self.gate.call(lambda: self.read_status(device), operation="read_status")
        except VendorError as exc:
            self.out.get_answer(device, transaction, reply, error=exc.info)
            return
        self.observe(device, patch, "get")
        self.out.get_answer(device, transaction, reply, data=self.out.twin_doc(device))
