"""Running a desired field's plan: each planned vendor call is a command of its own.

The parent ``/set`` command owns the lifecycle users see (accepted, then one final answer); each
planned operation is stored as a child command (``parent`` set, no transaction of its own), with
``sent`` -> ``succeeded``/``failed`` transitions on the device's event topic and in the journal
(through :class:`~twin.lifecycle.Lifecycle`, like every command). Children are never resumed after
a crash: the parent asks for a new plan against the vendor's state of that moment, which is what
makes a plan safe to run again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import CommandStatus
from twin.adapter import CommandContext, ExecuteResult, PlannedOperation, VendorError
from twin.lifecycle import Lifecycle
from twin.store import CommandRecord

__all__ = ["PlanRunner"]


class PlanRunner:
    def __init__(self, *, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def run(self, parent: CommandRecord, ops: Sequence[PlannedOperation], ctx: CommandContext) -> ExecuteResult:
        results: list[dict[str, object]] = []
        for step, op in enumerate(ops, 1):
            child = self._start(parent, op, step, len(ops))
            await self.lifecycle.store.settled()  # the operation is durable as sent before it is
            try:
                await op.run(replace(ctx, command_id=child.id, name=child.name))
            except VendorError as exc:
                self.lifecycle.finish(child, CommandStatus.FAILED, exc.info)
                raise
            except Exception as exc:
                info = ErrorInfo.of(ErrorCode.VENDOR_ERROR, f"adapter error: {type(exc).__name__}", retryable=False)
                self.lifecycle.finish(child, CommandStatus.FAILED, info)
                raise VendorError(info.code, info.message, retryable=False) from exc
            self.lifecycle.finish(child, CommandStatus.SUCCEEDED, None)
            results.append({"operation": op.name, "target": op.label, "command_id": child.id, "status": "succeeded"})
        return ExecuteResult(data={"operations": results})

    def _start(self, parent: CommandRecord, op: PlannedOperation, step: int, steps: int) -> CommandRecord:
        now = time.time()
        child = CommandRecord(
            id=uuid.uuid4().hex,
            device=parent.device,
            transaction=None,
            kind="action",
            name=f"{parent.name}.{op.name}",
            value={"target": op.label, "step": step, "of": steps},
            status=CommandStatus.SENT,
            source=parent.source,
            accepted_at=now,
            expires_at=parent.expires_at,
            updated_at=now,
            attempts=1,
            idempotent=False,
            answered=True,  # children are answered through their parent
            parent=parent.id,
        )
        self.lifecycle.begin_child(child, transaction=parent.transaction)
        return child
