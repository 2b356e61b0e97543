"""The twin engine of one adapter: command intake, lifecycle, confirmation, drift and hold.

Lifecycle of a command::

    accepted (stored before it is answered) -> sent -> acknowledged -> succeeded
        \\-> superseded (a newer /set of the same field before it was sent)
        \\-> expired (its time ran out before the vendor accepted it; never sent after that)
        \\-> failed (a vendor error that is not worth retrying, or not confirmed before expiry)

Commands of one device run one at a time in the order they were accepted; devices run
concurrently, with at most ``max_in_flight`` vendor calls of the adapter at once.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from pydantic import TypeAdapter

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import CommandStatus, DesiredLock, EventType, LockState
from contracts.topics import InboundTopic, Topics
from twin.adapter import Adapter, CommandContext, DeviceInfo, ExecuteResult, ReportedPatch, VendorError
from twin.backoff import VendorBackoff
from twin.document import iso
from twin.intake import (
    Arrival,
    ParsedAction,
    ParsedSet,
    Rejected,
    best_effort_transaction,
    expiry,
    parse_action,
    parse_get,
    parse_set,
)
from twin.metrics import COMMANDS, IN_FLIGHT, VENDOR_CALL_SECONDS
from twin.outbound import Outbound, ReplyTo
from twin.plans import PlanRunner
from twin.redaction import keep_redacted, public_value
from twin.store import CommandRecord, Store, TwinRecord

__all__ = ["EngineOptions", "TwinEngine"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    hold: frozenset[str] = frozenset()
    default_expiry: float | None = None
    max_expiry: float | None = None
    max_in_flight: int | None = None
    call_timeout: float = 30.0
    retry_base: float = 0.5
    retry_cap: float = 30.0
    #: see twin.outbound: None publishes every change of a twin at once
    publish_coalesce: float | None = None


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _plain_json(value: Any) -> Any:
    """A validated desired value as JSON data (enums as their values, models dumped)."""
    return _ANY.dump_python(value, mode="json")


def _unanswered(then: str) -> ErrorInfo:
    return ErrorInfo.of(ErrorCode.NOT_CONFIRMED, f"the vendor never answered a call and may still act on it; {then}")


@dataclass
class _DeviceRuntime:
    info: DeviceInfo
    #: set by the next observation; made only while someone waits for one (an idle anyio event
    #: costs ~0.9 KB, and a fleet has a runtime per device)
    reported_changed: anyio.Event | None = None
    confirmed_by: str | None = None
    jammed_by: str | None = None
    current: CommandRecord | None = None
    #: open top-level commands in acceptance order (the store holds the same, for a restart); the
    #: worker, intake and outcome share these objects, so a command superseded while its worker
    #: waits to retry is seen as superseded by that worker
    queue: list[CommandRecord] = field(default_factory=list)
    #: set when the command waiting out its retry backoff was superseded (exists only meanwhile)
    wake_retry: anyio.Event | None = None
    worker_running: bool = False
    watermark: dict[str, float] = field(default_factory=dict)


class TwinEngine:
    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        store: Store,
        topics: Topics,
        options: EngineOptions,
        owns: Callable[[str], bool] = lambda device: True,
    ) -> None:
        self.adapter = adapter
        self.owns = owns
        self.store = store
        self.topics = topics
        self.options = options
        self.out = Outbound(
            topics=topics, store=store, hold=options.hold, current_of=self._in_flight, latest_of=self._latest
        )
        self.plans = PlanRunner(store=store, out=self.out, vendor=adapter.vendor)
        self.fields = adapter.desired_fields()
        self._validators: dict[str, TypeAdapter[Any]] = {}
        #: commands one of whose calls got no answer: the vendor may have acted on it
        self._maybe_executed: set[str] = set()
        self.actions = adapter.actions()
        self.devices: dict[str, _DeviceRuntime] = {}
        self.twins: dict[str, TwinRecord] = {}
        self.limiter = anyio.CapacityLimiter(options.max_in_flight or adapter.max_in_flight)
        #: whether the vendor fails as a whole: background reads wait while it does (twin.polling)
        self.backoff = VendorBackoff()
        self._tg: TaskGroup | None = None
        self._default_expiry = options.default_expiry or adapter.default_expiry
        self._max_expiry = options.max_expiry or adapter.max_expiry

    # -- start -----------------------------------------------------------------------------------
    async def start(self, tg: TaskGroup, devices: list[DeviceInfo]) -> None:
        """Load the store, adopt the adapter's devices, settle commands left by a previous run."""
        self._tg = tg
        if self.options.publish_coalesce is not None:
            tg.start_soon(self.out.run, self.options.publish_coalesce)
        self.twins = self.store.load_twins()
        listed = {d.id for d in devices}
        with self.store.transaction():
            for info in devices:
                self.devices[info.id] = _DeviceRuntime(info=info)
                twin = self.twins.setdefault(info.id, TwinRecord(device=info.id))
                if not twin.present or twin.version == 0:
                    twin.present = True
                    self.store.save_twin(twin)
            for device, twin in self.twins.items():
                if device not in listed and twin.present:
                    twin.present = False
                    self.store.save_twin(twin)
        self.out.attach(self.twins, devices, self.fields, self.actions)
        now = time.time()
        for cmd in self.store.open_commands():
            if cmd.parent is not None:
                # A planned operation caught by a stop: its parent plans again from fresh state.
                outcome = ErrorInfo.of(ErrorCode.NOT_CONFIRMED, "outcome unknown: the bridge stopped during the call")
                self.plans.end(cmd, CommandStatus.FAILED, outcome)
            elif cmd.device not in self.devices:
                self._finish(cmd, CommandStatus.FAILED, ErrorInfo.of(ErrorCode.UNKNOWN_DEVICE, "device is gone"))
            elif cmd.expires_at <= now and cmd.status == CommandStatus.ACCEPTED:
                self._expire(cmd, "expired while the bridge was down")
            elif cmd.expires_at <= now:
                # It reached the vendor (or may have): not "expired", which promises it was never sent.
                self._finish(
                    cmd,
                    CommandStatus.FAILED,
                    ErrorInfo.of(ErrorCode.NOT_CONFIRMED, "not confirmed before it expired (the bridge was down)"),
                )
            elif cmd.status == CommandStatus.SENT and not cmd.idempotent:
                # The call may or may not have reached the vendor; repeating it is not safe.
                self._finish(
                    cmd,
                    CommandStatus.FAILED,
                    ErrorInfo.of(ErrorCode.NOT_CONFIRMED, "outcome unknown: the bridge stopped during the call"),
                )
            else:
                self.devices[cmd.device].queue.append(cmd)
                self._kick(cmd.device)

    # -- inbound -----------------------------------------------------------------------------------
    async def handle(
        self,
        inbound: InboundTopic,
        payload: bytes,
        *,
        retained: bool,
        reply: ReplyTo | None,
        arrival: Arrival | None = None,
    ) -> None:
        """Answer one inbound message; never raises for bad input. ``arrival``: what the broker's
        delivery tells of the message's age (see :func:`twin.intake.expiry`)."""
        arrival = arrival or Arrival()
        if not self.owns(inbound.device):
            return  # another shard's device: that shard answers
        if retained and not payload:
            return  # an empty retained payload clears a retained command from the broker: no command
        suffix = inbound.response_suffix
        try:
            if retained:
                raise Rejected(
                    ErrorCode.RETAINED_COMMAND,
                    "retained commands are refused; publish commands without the retain flag",
                    transaction=best_effort_transaction(payload),
                )
            if inbound.device not in self.devices:
                raise Rejected(
                    ErrorCode.UNKNOWN_DEVICE,
                    f"no device {inbound.device[:128]!r} on {self.adapter.vendor}",
                    transaction=best_effort_transaction(payload),
                )
            if inbound.kind == "set":
                await self._intake_set(inbound.device, payload, reply, arrival)
            elif inbound.kind == "get":
                await self._intake_get(inbound.device, payload, reply)
            else:
                await self._intake_action(inbound.device, inbound.action or "", payload, reply, arrival)
        except Rejected as rej:
            transaction = rej.transaction
            if transaction is not None and self.store.command_by_transaction(inbound.device, transaction):
                # A refused payload is not the answer of the stored command that has this transaction
                # (a client keyed by transaction would take it for its command's outcome).
                transaction = None
            self.out.rejected(inbound.device, suffix, transaction, rej.error, reply)

    def _replay(self, cmd: CommandRecord, fingerprint: str, suffix: str, reply: ReplyTo | None) -> None:
        """Idempotency: the same transaction gets the same answers, and no second vendor call; a
        transaction reused for another command is refused."""
        if cmd.fingerprint is not None and cmd.fingerprint != fingerprint:
            raise Rejected(
                ErrorCode.TRANSACTION_REUSED,
                f"transaction {cmd.transaction!r} already names another command of this device "
                f"({cmd.kind} {cmd.name}, {cmd.status.value}); use a new transaction for a new command",
                transaction=cmd.transaction,
            )
        self.out.answer(cmd, suffix, reply, status=CommandStatus.ACCEPTED)
        if cmd.status.is_final:
            self.out.answer(cmd, suffix, reply)

    async def _intake_set(self, device: str, payload: bytes, reply: ReplyTo | None, arrival: Arrival) -> None:
        req = parse_set(payload, self.fields)
        spec = self.fields[req.name]
        fingerprint = self.store.fingerprint("set", req.name, _plain_json(req.value))
        if req.transaction is not None:
            known = self.store.command_by_transaction(device, req.transaction)
            if known is not None:
                self._replay(known, fingerprint, "set", reply)
                return
        if spec.capability not in self.devices[device].info.capabilities:
            raise Rejected(ErrorCode.UNSUPPORTED, f"{device} cannot {spec.name}", transaction=req.transaction)
        twin = self.twins[device]
        if req.if_version is not None and req.if_version != twin.version:
            raise Rejected(
                ErrorCode.VERSION_CONFLICT,
                f"twin is at version {twin.version}, not {req.if_version}",
                transaction=req.transaction,
            )
        expires_at = self._expiry(device, req, fingerprint, arrival)
        self._accept(
            device,
            kind="set",
            name=req.name,
            value=req.value,
            transaction=req.transaction,
            expires_at=expires_at,
            source="mqtt",
            idempotent=spec.idempotent,
            sensitive=False,
            reply=reply,
            fingerprint=fingerprint,
        )

    async def _intake_action(
        self, device: str, action: str, payload: bytes, reply: ReplyTo | None, arrival: Arrival
    ) -> None:
        spec = self.actions.get(action)
        if spec is None:
            raise Rejected(
                ErrorCode.UNSUPPORTED,
                f"{self.adapter.vendor} has no action {action[:64]!r}",
                transaction=best_effort_transaction(payload),
            )
        req = parse_action(payload, spec)
        arguments = req.arguments.model_dump(mode="json")
        fingerprint = self.store.fingerprint("action", action, arguments)
        if req.transaction is not None:
            known = self.store.command_by_transaction(device, req.transaction)
            if known is not None:
                self._replay(known, fingerprint, action, reply)
                return
        if spec.capability and spec.capability not in self.devices[device].info.capabilities:
            raise Rejected(ErrorCode.UNSUPPORTED, f"{device} cannot {action}", transaction=req.transaction)
        expires_at = self._expiry(device, req, fingerprint, arrival)
        self._accept(
            device,
            kind="action",
            name=action,
            value=arguments,
            transaction=req.transaction,
            expires_at=expires_at,
            source="mqtt",
            idempotent=spec.idempotent,
            sensitive=spec.sensitive,
            reply=reply,
            fingerprint=fingerprint,
        )

    def _expiry(self, device: str, req: ParsedSet | ParsedAction, fingerprint: str, arrival: Arrival) -> float:
        """When an incoming command expires, or Rejected. A command refused for its age is remembered:
        the same command sent again (a client re-sending it) gets the same answer, never a run."""
        if req.transaction is not None:
            refused = self.store.refusal(device, req.transaction, fingerprint)
            if refused is not None:
                raise Rejected.of(ErrorInfo.model_validate(refused), transaction=req.transaction)
        try:
            return expiry(
                expires_in=req.expires_in,
                issued_at=req.issued_at,
                default=self._default_expiry,
                maximum=self._max_expiry,
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

    async def _intake_get(self, device: str, payload: bytes, reply: ReplyTo | None) -> None:
        transaction = parse_get(payload)
        assert self._tg is not None
        self._tg.start_soon(self._serve_get, device, transaction, reply)

    async def _serve_get(self, device: str, transaction: str | None, reply: ReplyTo | None) -> None:
        try:
            patch = await self._call(lambda: self.adapter.read_status(device), operation="read_status")
        except VendorError as exc:
            self.out.get_answer(device, transaction, reply, error=exc.info)
            return
        await self.report(device, patch, source="get")
        self.out.get_answer(device, transaction, reply, data=self.out.twin_doc(device))

    # -- acceptance --------------------------------------------------------------------------------
    def _accept(
        self,
        device: str,
        *,
        kind: str,
        name: str,
        value: Any,
        transaction: str | None,
        expires_at: float,
        source: str,
        idempotent: bool,
        sensitive: bool,
        reply: ReplyTo | None,
        fingerprint: str | None = None,
    ) -> CommandRecord:
        now = time.time()
        cmd = CommandRecord(
            id=uuid.uuid4().hex,
            device=device,
            transaction=transaction,
            kind="set" if kind == "set" else "action",
            name=name,
            value=value,
            status=CommandStatus.ACCEPTED,
            source=source,
            accepted_at=now,
            expires_at=expires_at,
            updated_at=now,
            idempotent=idempotent,
            sensitive=sensitive,
            reply_topic=None if reply is None else reply.topic,
            correlation=None if reply is None else reply.correlation,
            fingerprint=fingerprint,
        )
        twin = self.twins[device]
        rt = self.devices[device]
        superseded: list[CommandRecord] = []
        with self.store.transaction():
            if kind == "set":
                for old in rt.queue:
                    if old.kind == "set" and old.name == name and old.status == CommandStatus.ACCEPTED:
                        self._replace(old, cmd)
                        superseded.append(old)
                twin.desired[name] = self.fields[name].redact(value)
            rt.queue[:] = [c for c in rt.queue if not c.status.is_final]
            self.store.insert_command(cmd)
            twin.command_id = cmd.id
            twin.version += 1
            self.store.save_twin(twin)
            self.store.journal(
                entry="request",
                device=device,
                source=source,
                command_id=cmd.id,
                transaction=transaction,
                data={"kind": kind, "name": name, "value": self._redacted(kind, name, value, sensitive=sensitive)},
            )
        rt.queue.append(cmd)
        if superseded and rt.wake_retry is not None:
            rt.wake_retry.set()  # a worker waiting to retry what was just superseded moves on
        for old in superseded:
            self.out.command_event(old, CommandStatus.ACCEPTED)
            self.out.command_final(old)
        self.out.answer(cmd, "set" if kind == "set" else name, reply, status=CommandStatus.ACCEPTED)
        self.out.command_event(cmd, None)
        self.out.twin_changed(device)
        self._kick(device)
        return cmd

    def _replace(self, old: CommandRecord, new: CommandRecord) -> None:
        """A newer /set of the same field replaces one waiting to be (re)sent (inside a transaction)."""
        old.result = {"superseded_by": new.id, "superseded_by_transaction": new.transaction}
        if old.id in self._maybe_executed:
            # "superseded" promises the vendor never acted on it; a call left unanswered may have
            old.status = CommandStatus.FAILED
            old.error = _unanswered("a newer command replaced it").model_dump()
            self._maybe_executed.discard(old.id)
        else:
            old.status = CommandStatus.SUPERSEDED
            old.error = None  # a retried error is not its outcome
        COMMANDS.labels(self.adapter.vendor, old.name, old.status.value).inc()
        keep_redacted(old, fields=self.fields, actions=self.actions, store=self.store)  # as _finish does
        self.store.update_command(old)
        self.store.journal(
            entry="outcome",
            device=old.device,
            source=old.source,
            command_id=old.id,
            transaction=old.transaction,
            data={"status": old.status.value, "by": new.id, "error": old.error},
        )

    # -- worker ------------------------------------------------------------------------------------
    def _kick(self, device: str) -> None:
        rt = self.devices[device]
        if rt.worker_running or self._tg is None:
            return
        rt.worker_running = True
        self._tg.start_soon(self._work, device)

    async def _work(self, device: str) -> None:
        rt = self.devices[device]
        try:
            while rt.queue:
                rt.current = rt.queue[0]
                gauge = IN_FLIGHT.labels(self.adapter.vendor)
                gauge.inc()
                try:
                    await self._run(rt.current)
                finally:
                    rt.current = None
                    gauge.dec()
        except Exception:
            log.exception("worker of %s failed", device)
        finally:
            rt.worker_running = False

    async def _run(self, cmd: CommandRecord) -> None:
        while not cmd.status.is_final:
            remaining = cmd.expires_at - time.time()
            if remaining <= 0:
                if cmd.status == CommandStatus.ACKNOWLEDGED:
                    self._finish(
                        cmd,
                        CommandStatus.FAILED,
                        ErrorInfo.of(ErrorCode.NOT_CONFIRMED, "the vendor accepted it but the device never confirmed"),
                    )
                elif cmd.id in self._maybe_executed:
                    self._finish(cmd, CommandStatus.FAILED, _unanswered("it expired"))
                else:
                    self._expire(cmd, "the command expired before the vendor accepted it")
                return
            if cmd.status == CommandStatus.ACKNOWLEDGED:
                await self._confirm(cmd, remaining)
            else:
                await self._send(cmd, remaining)

    async def _send(self, cmd: CommandRecord, remaining: float) -> None:
        cmd.attempts += 1
        self._set_status(cmd, CommandStatus.SENT, journal={"attempt": cmd.attempts})
        ctx = CommandContext(
            command_id=cmd.id,
            transaction=cmd.transaction,
            device_id=cmd.device,
            name=cmd.name,
            expires_at=iso(cmd.expires_at),
            attempt=cmd.attempts,
        )
        try:
            planned = cmd.kind == "set" and self.fields[cmd.name].plan is not None
            result = await self._call(
                lambda: self._execute(cmd, ctx), operation=cmd.name, timeout=remaining, whole=planned
            )
        except VendorError as exc:
            cmd.error = exc.info.model_dump()
            if exc.maybe_executed:
                self._maybe_executed.add(cmd.id)
                if not cmd.idempotent:
                    self._finish(cmd, CommandStatus.FAILED, _unanswered("an action is never sent twice"))
                    return
            if exc.info.code == ErrorCode.DEVICE_OFFLINE:
                await self.report(cmd.device, ReportedPatch(values={"online": False}), source="command")
            if not exc.info.retryable:
                self._finish(cmd, CommandStatus.FAILED, exc.info)
                return
            self._set_status(cmd, CommandStatus.ACCEPTED, journal={"retry": exc.info.model_dump()})
            delay = min(self.options.retry_cap, self.options.retry_base * 2 ** (cmd.attempts - 1))
            delay = max(delay * random.uniform(0.5, 1.0), exc.info.retry_after or 0.0)
            rt = self.devices[cmd.device]
            rt.wake_retry = wake = anyio.Event()
            try:
                with anyio.move_on_after(min(delay, max(0.0, cmd.expires_at - time.time()))):
                    await wake.wait()
            finally:
                rt.wake_retry = None
            return
        if cmd.kind == "action":
            if result.reported is not None:  # a read action refreshes the twin too
                await self.report(cmd.device, result.reported, source="action")
            cmd.result = None if cmd.sensitive else result.data
            self._finish(cmd, CommandStatus.SUCCEEDED, None, data=result.data)
            return
        cmd.acked_at = time.time()
        cmd.result = result.data
        self.devices[cmd.device].confirmed_by = None
        self._set_status(cmd, CommandStatus.ACKNOWLEDGED, journal={"acknowledged": True})
        if result.reported is not None:
            await self.report(cmd.device, result.reported, source="command")

    async def _execute(self, cmd: CommandRecord, ctx: CommandContext) -> ExecuteResult:
        if cmd.kind == "set":
            field = self.fields[cmd.name]
            validator = self._validators.get(cmd.name)
            if validator is None:  # built once per field: building one costs more than the validation
                validator = self._validators[cmd.name] = TypeAdapter(field.type)
            value = validator.validate_python(cmd.value)
            if field.plan is not None:
                ops = await field.plan(cmd.device, value, ctx)
                return await self.plans.run(cmd, ops, ctx)
            return await self.adapter.set_desired(cmd.device, cmd.name, value, ctx)
        action = self.actions[cmd.name]
        return await action.handler(cmd.device, action.arguments.model_validate(cmd.value), ctx)

    async def _confirm(self, cmd: CommandRecord, remaining: float) -> None:
        """Wait for a reported state, observed after the vendor's acceptance, that matches."""
        rt = self.devices[cmd.device]
        interval = self.adapter.confirm_interval
        while True:
            if self._decide(cmd):
                return
            remaining = cmd.expires_at - time.time()
            if remaining <= 0:
                return
            if rt.reported_changed is None:
                rt.reported_changed = anyio.Event()
            event = rt.reported_changed
            with anyio.move_on_after(min(interval, remaining)):
                await event.wait()
            if rt.confirmed_by == cmd.id or event.is_set():
                continue
            try:
                patch = await self._call(lambda: self.adapter.read_status(cmd.device), operation="read_status")
            except VendorError as exc:
                log.info("confirmation read of %s failed: %s", cmd.device, exc.info.code)
            else:
                with self.store.transaction():  # the observation and the outcome it decides: one commit
                    self.observe(cmd.device, patch, source="confirm")
                    if self._decide(cmd):
                        return
            interval = min(interval * 1.5, self.adapter.confirm_max_interval)

    def _decide(self, cmd: CommandRecord) -> bool:
        """End ``cmd`` if an observation confirmed or refuted it."""
        rt = self.devices[cmd.device]
        if rt.confirmed_by == cmd.id:
            self._finish(cmd, CommandStatus.SUCCEEDED, None)
        elif rt.jammed_by == cmd.id:
            self._finish(cmd, CommandStatus.FAILED, ErrorInfo.of(ErrorCode.NOT_CONFIRMED, "the lock is jammed"))
        else:
            return False
        return True

    async def call_read(self, device_id: str) -> ReportedPatch | None:
        """A status read for polling: failures are logged; an offline device is reported offline."""
        try:
            patch: ReportedPatch = await self._call(
                lambda: self.adapter.read_status(device_id), operation="read_status"
            )
        except VendorError as exc:
            log.info("status read of %s failed: %s %s", device_id, exc.info.code, exc.info.message)
            if exc.info.code == ErrorCode.DEVICE_OFFLINE:
                return ReportedPatch(values={"online": False})
            return None
        return patch

    async def _call(
        self, fn: Callable[[], Awaitable[Any]], *, operation: str, timeout: float | None = None, whole: bool = False
    ) -> Any:
        """One vendor call under the adapter's concurrency cap; ``whole``: a plan, bounded by the expiry only."""
        cap = float("inf") if whole else self.options.call_timeout
        limit = min(timeout or self.options.call_timeout, cap)
        if timeout is None:
            await self.limiter.acquire()
        else:
            # A command's time runs while it waits for a slot of the cap: one that expired waiting
            # never reaches the vendor, and a call gets only what is left of the command's time.
            deadline = anyio.current_time() + timeout
            acquired = False
            with anyio.move_on_after(timeout):
                await self.limiter.acquire()
                acquired = True
            left = deadline - anyio.current_time()
            if acquired and left <= 0:
                self.limiter.release()
            if not acquired or left <= 0:
                raise VendorError(ErrorCode.DEVICE_TIMEOUT, "the command expired waiting for a free vendor call slot")
            limit = min(left, cap)
        outcome = "ok"
        try:
            started, since = time.perf_counter(), self.backoff.clock()
            try:
                with anyio.fail_after(limit):
                    result = await fn()
                self.backoff.succeeded()
                return result
            except VendorError as exc:
                outcome = exc.info.code.value
                if exc.vendor_wide:
                    self.backoff.failed(started=since, retry_after=exc.info.retry_after)
                raise
            except TimeoutError:
                outcome = "error"
                if limit >= self.options.call_timeout:  # not a command whose own time was nearly up
                    self.backoff.failed(started=since)
                raise
            except BaseException:
                outcome = "error"
                raise
            finally:
                self.limiter.release()
                VENDOR_CALL_SECONDS.labels(self.adapter.vendor, operation, outcome).observe(
                    time.perf_counter() - started
                )
        except VendorError:
            raise
        except TimeoutError:
            raise VendorError(
                ErrorCode.DEVICE_TIMEOUT, f"no answer from the vendor within {limit:.1f}s", maybe_executed=True
            ) from None
        except Exception as exc:
            log.exception("adapter call failed")
            raise VendorError(ErrorCode.VENDOR_ERROR, f"adapter error: {type(exc).__name__}", retryable=False) from None

    # -- transitions -------------------------------------------------------------------------------
    def _set_status(self, cmd: CommandRecord, status: CommandStatus, *, journal: dict[str, Any]) -> None:
        """A step of the lifecycle (not an outcome): desired and reported stay, so the version does too."""
        before = cmd.status
        cmd.status = status
        with self.store.transaction():
            self.store.update_command(cmd)
            self.store.journal(
                entry=f"command.{status.value}",
                device=cmd.device,
                source=cmd.source,
                command_id=cmd.id,
                transaction=cmd.transaction,
                data=journal,
            )
        self.out.command_event(cmd, before)
        self.out.twin_changed(cmd.device)

    def _expire(self, cmd: CommandRecord, message: str) -> None:
        self._finish(cmd, CommandStatus.EXPIRED, ErrorInfo.of(ErrorCode.EXPIRED, message))

    def _finish(
        self,
        cmd: CommandRecord,
        status: CommandStatus,
        error: ErrorInfo | None,
        *,
        data: dict[str, Any] | None = None,
    ) -> None:
        before = cmd.status
        cmd.status = status
        cmd.error = None if error is None else error.model_dump()
        self._maybe_executed.discard(cmd.id)
        COMMANDS.labels(self.adapter.vendor, cmd.name, status.value).inc()
        keep_redacted(cmd, fields=self.fields, actions=self.actions, store=self.store)  # no key, no card id
        twin = self.twins.get(cmd.device)
        rt = self.devices.get(cmd.device)
        if rt is not None:
            rt.queue[:] = [c for c in rt.queue if c.id != cmd.id]
        with self.store.transaction():
            self.store.update_command(cmd)
            if twin is not None:
                queued = [] if rt is None else rt.queue
                newer = [c for c in queued if c.kind == "set" and c.name == cmd.name]
                if cmd.kind == "set" and not newer:
                    twin.desired.pop(cmd.name, None)
                twin.version += 1
                self.store.save_twin(twin)
            self.store.journal(
                entry="outcome",
                device=cmd.device,
                source=cmd.source,
                command_id=cmd.id,
                transaction=cmd.transaction,
                data={"status": status.value, "error": cmd.error},
            )
        # Retained state first, so a client that sees the final answer reads a matching state.
        if twin is not None:
            self.out.twin_changed(cmd.device)
        self.out.command_event(cmd, before)
        self.out.command_final(cmd, data=data)

    # -- reported state ----------------------------------------------------------------------------
    async def report(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        """Merge a vendor observation; write and publish only what changed."""
        return self.observe(device_id, patch, source=source)

    def observe(self, device_id: str, patch: ReportedPatch, *, source: str) -> bool:
        """:meth:`report`, without suspending (so that it can share a caller's transaction)."""
        rt = self.devices.get(device_id)
        if rt is None:
            return False
        twin = self.twins[device_id]
        now = time.time()
        changes: dict[str, tuple[Any, Any]] = {}
        for name, value in patch.values.items():
            if name in self.adapter.secret_fields:
                continue
            observed = patch.observed(name)
            observed_ts = observed.timestamp() if observed is not None else now
            if observed_ts < rt.watermark.get(name, float("-inf")):
                continue  # older than what we already know: a late push never wins
            rt.watermark[name] = observed_ts
            plain = value.value if isinstance(value, LockState | DesiredLock) else value
            if twin.reported.get(name) != plain:
                changes[name] = (twin.reported.get(name), plain)
                twin.reported[name] = plain
                twin.metadata[name] = {
                    "observed_at": None if observed is None else observed.isoformat(),
                    "received_at": iso(now).isoformat(),
                    "source": source,
                }
        inflight = self._in_flight(device_id)
        # Only observations made after the vendor accepted the command can confirm (or refute) it.
        if inflight is not None and inflight.status == CommandStatus.ACKNOWLEDGED and inflight.kind == "set":
            if self.fields[inflight.name].confirmed(inflight.value, twin.reported):
                rt.confirmed_by = inflight.id
            elif inflight.name == "lock" and twin.reported.get("lock") == LockState.JAMMED:
                rt.jammed_by = inflight.id
        if changes:
            twin.version += 1
            with self.store.transaction():
                self.store.save_twin(twin)
                self.store.journal(
                    entry="state",
                    device=device_id,
                    source=source,
                    data={k: {"from": a, "to": b} for k, (a, b) in changes.items()},
                )
            self.out.twin_changed(device_id)
            if "online" in changes:
                self.out.availability(device_id)
            self._drift(device_id, changes, inflight, source)
        if rt.reported_changed is not None:
            rt.reported_changed.set()
            rt.reported_changed = None
        return True

    def _redacted(self, kind: str, name: str, value: Any, *, sensitive: bool) -> Any:
        return public_value(kind, name, value, sensitive=sensitive, fields=self.fields, actions=self.actions)

    def _latest(self, device: str) -> CommandRecord | None:
        rt = self.devices.get(device)
        return None if rt is None else rt.current

    def _in_flight(self, device: str) -> CommandRecord | None:
        rt = self.devices.get(device)
        cmd = None if rt is None else rt.current
        return cmd if cmd is not None and not cmd.status.is_final else None

    def _drift(
        self, device: str, changes: dict[str, tuple[Any, Any]], inflight: CommandRecord | None, source: str
    ) -> None:
        for name, (before, after) in changes.items():
            if name not in self.fields or before is None:
                continue
            if inflight is not None and inflight.kind == "set" and inflight.name == name:
                continue
            self.out.event(device, EventType.DRIFT, {"field": name, "from": before, "to": after, "source": source})
            if name == "lock" and after == LockState.UNLOCKED and device in self.options.hold:
                self._accept(
                    device,
                    kind="set",
                    name="lock",
                    value=DesiredLock.LOCKED,
                    transaction=f"hold-{uuid.uuid4().hex[:12]}",
                    expires_at=time.time() + self._default_expiry,
                    source="hold",
                    idempotent=True,
                    sensitive=False,
                    reply=None,
                )

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        if device_id in self.devices:
            self.store.journal(entry=f"event.{type.value}", device=device_id, source="vendor", data=data)
            self.out.event(device_id, type, data)
