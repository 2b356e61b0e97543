"""Admission: whether a validated command is a replay, is refused, or is accepted, and until when.

The checks, in order: the same transaction on the device (the same command again is a replay,
another command is ``TRANSACTION_REUSED``); the device's capability; ``if_version``; the command's
age (:func:`twin.intake.expiry`). A command refused for its age is remembered (the ``refusals``
table), so that the same command sent again gets the same answer instead of running later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from contracts.errors import ErrorCode, ErrorInfo
from twin.adapter import DeviceInfo
from twin.intake import Arrival, CommandRequest, Rejected, expiry
from twin.store import CommandRecord, TwinRecord, TwinStore

__all__ = ["Admission", "Admitted"]

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


@dataclass(frozen=True)
class Admitted:
    """A command to accept: when it expires, and what it asks (its fingerprint)."""

    expires_at: float
    fingerprint: str


class Admission:
    def __init__(self, *, store: TwinStore, default_expiry: float, max_expiry: float) -> None:
        self.store = store
        self.default_expiry = default_expiry
        self.max_expiry = max_expiry

    def admit(
        self, device: DeviceInfo, req: CommandRequest, *, twin: TwinRecord, arrival: Arrival
    ) -> Admitted | CommandRecord:
        """The stored command when ``req`` is a replay of it, else :class:`Admitted`; or Rejected."""
        fingerprint = self.store.fingerprint(req.kind, req.name, _ANY.dump_python(req.value, mode="json"))
        if req.transaction is not None:
            known = self.store.command_by_transaction(device.id, req.transaction)
            if known is not None:
                if known.fingerprint is not None and known.fingerprint != fingerprint:
                    raise Rejected(
                        ErrorCode.TRANSACTION_REUSED,
                        f"transaction {known.transaction!r} already names another command of this device "
                        f"({known.kind} {known.name}, {known.status.value}); use a new transaction for a new command",
                        transaction=known.transaction,
                    )
                return known
        if req.capability and req.capability not in device.capabilities:
            raise Rejected(ErrorCode.UNSUPPORTED, f"{device.id} cannot {req.name}", transaction=req.transaction)
        if req.if_version is not None and req.if_version != twin.version:
            raise Rejected(
                ErrorCode.VERSION_CONFLICT,
                f"twin is at version {twin.version}, not {req.if_version}",
                transaction=req.transaction,
            )
        return Admitted(self._expiry(device.id, req, fingerprint, arrival), fingerprint)

    def _expiry(self, device: str, req: CommandRequest, fingerprint: str, arrival: Arrival) -> float:
        if req.transaction is not None:
            refused = self.store.refusal(device, req.transaction, fingerprint)
            if refused is not None:
                raise Rejected.of(ErrorInfo.model_validate(refused), transaction=req.transaction)
        try:
            return expiry(
                expires_in=req.expires_in,
                issued_at=req.issued_at,
                default=self.default_expiry,
                maximum=self.max_expiry,
                now=time.time(),
                queued_since=arrival.queued_since,
                expiry_left=arrival.expiry_left,
            )
        except Rejected as rej:
            rej.transaction = req.transaction
            if req.transaction is not None and rej.error.code == ErrorCode.EXPIRED:
                with self.store.transaction():
                    self.store.refuse(device, req.transaction, fingerprint, rej.error.model_dump())
                    self.store.journal(
                        entry="refused",
                        device=device,
                        source="mqtt",
                        transaction=req.transaction,
                        data={"error": rej.error.model_dump()},
                    )
            raise
