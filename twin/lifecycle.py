"""The lifecycle of a command: every transition in one place.

::

                 +--------------------- retryable error, time left (the retry edge) ----+
                 v                                                                      |
    (stored) accepted --attempt--> sent --the vendor accepted it--> acknowledged --the reported state
        |  |                        |  \\                               |         matches--> succeeded
        |  |                        |   \\--not retryable, or a call     |
        |  |                        |       left unanswered for an     +--refuted (a jammed lock), or
        |  |                        |       action never sent twice        no match before expiry --> failed
        |  |                        +--(an action) done ----------------------------------> succeeded
        |  +--a newer /set of the same field before it was sent --------------------------> superseded
        |     (or failed / NOT_CONFIRMED when an earlier call of it got no answer)
        +--its time ran out: never reached the vendor --------------------------------------> expired
                             a call of it may have reached the vendor ---------------------> failed

A transition updates the command, writes a journal entry, counts an outcome
(``locktwin_commands_total``) and announces it: a ``command`` event on the device's event topic,
and for an outcome the final answer, after the device's retained documents. All of it is one
commit; the messages wait for it (:meth:`twin.store.Store.after_commit`). The engine and the plan
runner (:mod:`twin.plans`) move commands only through :class:`Lifecycle`.

:func:`settle_at_start` and :func:`at_expiry` are the two decisions about commands whose time ran
out or whose call was cut by a stop: what they become, and why.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import CommandStatus
from twin.intake import CommandRequest
from twin.metrics import COMMANDS
from twin.outbound import Outbound, ReplyTo
from twin.store import CommandRecord, TwinRecord, TwinStore

__all__ = ["Lifecycle", "Outcome", "at_expiry", "new_command", "settle_at_start", "unanswered"]

#: what a command becomes: its final status and why
Outcome = tuple[CommandStatus, ErrorInfo | None]


def unanswered(then: str) -> ErrorInfo:
    return ErrorInfo.of(ErrorCode.NOT_CONFIRMED, f"the vendor never answered a call and may still act on it; {then}")


def at_expiry(cmd: CommandRecord, *, maybe_executed: bool, bridge_was_down: bool = False) -> Outcome:
    """What a command whose time ran out becomes. ``expired`` promises the vendor never got it, so a
    command whose call may have reached the vendor (acknowledged, sent when the bridge stopped, or a
    call that got no answer) ends ``failed`` / ``NOT_CONFIRMED`` instead."""
    if cmd.status == CommandStatus.ACKNOWLEDGED:
        why = "not confirmed before it expired (the bridge was down)" if bridge_was_down else None
        return CommandStatus.FAILED, ErrorInfo.of(
            ErrorCode.NOT_CONFIRMED, why or "the vendor accepted it but the device never confirmed"
        )
    if bridge_was_down and cmd.status == CommandStatus.SENT:
        return CommandStatus.FAILED, ErrorInfo.of(
            ErrorCode.NOT_CONFIRMED, "not confirmed before it expired (the bridge was down)"
        )
    if maybe_executed:
        return CommandStatus.FAILED, unanswered("it expired")
    why = (
        "expired while the bridge was down" if bridge_was_down else "the command expired before the vendor accepted it"
    )
    return CommandStatus.EXPIRED, ErrorInfo.of(ErrorCode.EXPIRED, why)


def settle_at_start(cmd: CommandRecord, *, now: float, known: bool) -> Outcome | None:
    """What an open command left by a previous run becomes at start; None: it is resumed."""
    if cmd.parent is not None:
        # a planned operation caught by a stop: its parent plans again from fresh state
        return CommandStatus.FAILED, ErrorInfo.of(
            ErrorCode.NOT_CONFIRMED, "outcome unknown: the bridge stopped during the call"
        )
    if not known:
        return CommandStatus.FAILED, ErrorInfo.of(ErrorCode.UNKNOWN_DEVICE, "device is gone")
    if cmd.expires_at <= now:
        return at_expiry(cmd, maybe_executed=False, bridge_was_down=True)
    if cmd.status == CommandStatus.SENT and not cmd.idempotent:
        # the call may or may not have reached the vendor; repeating it is not safe
        return CommandStatus.FAILED, ErrorInfo.of(
            ErrorCode.NOT_CONFIRMED, "outcome unknown: the bridge stopped during the call"
        )
    return None


def new_command(
    device: str,
    req: CommandRequest,
    *,
    expires_at: float,
    source: str,
    reply: ReplyTo | None,
    fingerprint: str | None,
) -> CommandRecord:
    """The record of a command about to be accepted."""
    now = time.time()
    return CommandRecord(
        id=uuid.uuid4().hex,
        device=device,
        transaction=req.transaction,
        kind=req.kind,
        name=req.name,
        value=req.value,
        status=CommandStatus.ACCEPTED,
        source=source,
        accepted_at=now,
        expires_at=expires_at,
        updated_at=now,
        idempotent=req.idempotent,
        sensitive=req.sensitive,
        reply_topic=None if reply is None else reply.topic,
        correlation=None if reply is None else reply.correlation,
        fingerprint=fingerprint,
    )


class Lifecycle:
    """Moves commands of one adapter's devices from state to state (see the module doc)."""

    def __init__(
        self,
        *,
        store: TwinStore,
        out: Outbound,
        vendor: str,
        twins: Mapping[str, TwinRecord],
        queued: Callable[[str], list[CommandRecord]],
        settle: Callable[[CommandRecord], None] = lambda cmd: None,
    ) -> None:
        self.store = store
        self.out = out
        self.vendor = vendor
        self.twins = twins
        #: the open commands of a device (a finished /set's desired value stays while a newer one waits)
        self.queued = queued
        #: what the store keeps of a command's value once it ended (twin.redaction.keep_redacted)
        self.settle = settle

    def accept(
        self,
        cmd: CommandRecord,
        twin: TwinRecord,
        *,
        shown: Any,
        superseded: list[tuple[CommandRecord, bool]],
        reply: ReplyTo | None,
    ) -> None:
        """A command enters: stored (a set's desired value as ``shown``, its redacted form), the
        commands it supersedes (each with whether a call of it may have reached the vendor) ended in
        the same commit; then answered ``accepted``. When the store cannot write, nothing changed
        (StoreUnavailable; undone by the store when the outer transaction this one joined rolls back)."""
        before = (dict(twin.desired), twin.version, twin.command_id)
        olds = [(old, old.status, old.error, old.result, old.value) for old, _ in superseded]

        def undo() -> None:
            twin.desired, twin.version, twin.command_id = before
            for old, status, error, result, value in olds:
                old.status, old.error, old.result, old.value = status, error, result, value

        with self.store.transaction():
            self.store.on_rollback(undo)
            for old, maybe_executed in superseded:
                self._supersede(old, cmd, maybe_executed=maybe_executed)
            if cmd.kind == "set":
                twin.desired[cmd.name] = shown
            self.store.insert_command(cmd)
            twin.command_id = cmd.id
            twin.version += 1
            self.store.save_twin(twin)
            self._journal(cmd, "request", {"kind": cmd.kind, "name": cmd.name, "value": shown})
        for old, _ in superseded:
            COMMANDS.labels(self.vendor, old.name, old.status.value).inc()
            self.out.command_event(old, CommandStatus.ACCEPTED)
            self.out.command_final(old)
        self.out.answer(cmd, "set" if cmd.kind == "set" else cmd.name, reply, status=CommandStatus.ACCEPTED)
        self.out.command_event(cmd, None)
        self.out.twin_changed(cmd.device)

    def step(self, cmd: CommandRecord, status: CommandStatus, *, journal: dict[str, Any]) -> None:
        """A step that is not an outcome (sent, acknowledged, accepted again to retry): desired and
        reported stay, so the twin's version does too."""
        before = cmd.status
        cmd.status = status
        with self.store.transaction():
            self.store.update_command(cmd)
            self._journal(cmd, f"command.{status.value}", journal)
        self.out.command_event(cmd, before)
        if cmd.parent is None:
            self.out.twin_changed(cmd.device)

    def finish(
        self, cmd: CommandRecord, status: CommandStatus, error: ErrorInfo | None, *, data: dict[str, Any] | None = None
    ) -> None:
        """An outcome: the command ends with its final answer (a planned operation's is its parent's).
        When the store cannot write (now, or when the outer transaction this one joined commits), the
        command is as it was: the caller decides the same outcome again once it can."""
        before = cmd.status
        kept = (cmd.error, cmd.value)
        cmd.status = status
        cmd.error = None if error is None else error.model_dump()
        self.settle(cmd)  # no key nor card id kept once it ended
        twin = None if cmd.parent is not None else self.twins.get(cmd.device)
        twin_before = None if twin is None else (dict(twin.desired), twin.version)

        def undo() -> None:
            cmd.status, (cmd.error, cmd.value) = before, kept
            if twin is not None and twin_before is not None:
                twin.desired, twin.version = twin_before

        with self.store.transaction():
            self.store.on_rollback(undo)
            self.store.update_command(cmd)
            if twin is not None:
                newer = [c for c in self.queued(cmd.device) if c.kind == "set" and c.name == cmd.name and c is not cmd]
                if cmd.kind == "set" and not newer:
                    twin.desired.pop(cmd.name, None)
                twin.version += 1
                self.store.save_twin(twin)
            outcome: dict[str, Any] = {"status": status.value, "error": cmd.error}
            self._journal(cmd, "outcome", {"parent": cmd.parent, **outcome} if cmd.parent else outcome)
        COMMANDS.labels(self.vendor, cmd.name, status.value).inc()
        if cmd.parent is not None:
            self.out.command_event(cmd, before)
            return
        # Retained state first, so a client that sees the final answer reads a matching state.
        if twin is not None:
            self.out.twin_changed(cmd.device)
        self.out.command_event(cmd, before)
        self.out.command_final(cmd, data=data)

    def _supersede(self, old: CommandRecord, new: CommandRecord, *, maybe_executed: bool) -> None:
        """A newer /set of the same field replaces one waiting to be (re)sent."""
        old.result = {"superseded_by": new.id, "superseded_by_transaction": new.transaction}
        if maybe_executed:
            # "superseded" promises the vendor never acted on it; a call left unanswered may have
            old.status = CommandStatus.FAILED
            old.error = unanswered("a newer command replaced it").model_dump()
        else:
            old.status = CommandStatus.SUPERSEDED
            old.error = None  # a retried error is not its outcome
        self.settle(old)  # as an outcome does: no card id kept once it ended
        self.store.update_command(old)
        self._journal(old, "outcome", {"status": old.status.value, "by": new.id, "error": old.error})

    def begin_child(self, child: CommandRecord, *, transaction: str | None) -> None:
        """A planned operation of ``child.parent`` starts (``sent``; it has no answer of its own);
        journaled under its parent's ``transaction``."""
        with self.store.transaction():
            self.store.insert_command(child)
            self._journal(child, "command.sent", {"parent": child.parent, **child.value}, transaction=transaction)
        self.out.command_event(child, None)

    def _journal(self, cmd: CommandRecord, entry: str, data: dict[str, Any], *, transaction: str | None = None) -> None:
        self.store.journal(
            entry=entry,
            device=cmd.device,
            source=cmd.source,
            command_id=cmd.id,
            transaction=transaction or cmd.transaction,
            data=data,
        )
