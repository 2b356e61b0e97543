"""The twin engine of one adapter: accept -> send -> confirm -> finish.

- **accept** (:meth:`TwinEngine.handle`): a command is validated (:mod:`twin.intake`), answered
  from the store when it is a replay, stored, answered ``accepted``; a newer ``/set`` of a field
  supersedes the one waiting to be sent;
- **send** (:meth:`_send`): the command's worker calls the vendor through the gate
  (:mod:`twin.gate`), retrying retryable errors with jittered backoff until it expires;
- **confirm** (:mod:`twin.confirm`): a desired value is done only once the device reports it, in an
  observation made after the vendor accepted it (a push, or reads: the first when the lock can
  have moved, learned per vendor and device by :mod:`twin.confirmtiming`, then backing off);
- **finish**: one outcome and one final answer (:mod:`twin.lifecycle` draws every edge).

Commands of one device run one at a time in the order they were accepted; devices run
concurrently under the gate's limit. Reported state merges through :func:`twin.reported.merge`;
a change nobody asked for is a ``drift`` event, and the hold policy sets held locks back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from pydantic import TypeAdapter

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import CommandStatus, EventType
from contracts.topics import InboundTopic, Topics
from twin.adapter import Adapter, CommandContext, DeviceInfo, ExecuteResult, ReportedPatch, VendorError
from twin.admission import Admission
from twin.confirm import Confirmation
from twin.confirmtiming import ConfirmTiming
from twin.devicestate import DeviceState
from twin.document import iso
from twin.fleetview import EngineFleet
from twin.gate import TooLate, VendorGate
from twin.intake import Arrival, CommandRequest, Rejected, best_effort_transaction, parse_command, parse_get
from twin.ledger import Ledger
from twin.lifecycle import Lifecycle, at_expiry, new_command, settle_at_start, unanswered
from twin.metrics import IN_FLIGHT, OBSERVATIONS_CLAMPED
from twin.outage import StoreOutage
from twin.outbound import Outbound, ReplyTo
from twin.plans import PlanRunner
from twin.policies import HoldPolicy
from twin.reads import StatusReads
from twin.redaction import keep_redacted, public_value
from twin.reported import merge, watermarks
from twin.store import CommandRecord, Store, StoreUnavailable, TwinRecord, TwinStore
from twin.storeapi import LeaseLost

if TYPE_CHECKING:
    from twin.config import BridgeOptions

__all__ = ["TwinEngine", "vendor_gate"]

log = logging.getLogger(__name__)


class TwinEngine:
    def __init__(
        self,
        *,
        adapter: Adapter[Any],
        store: TwinStore,
        topics: Topics,
        options: BridgeOptions,
        owns: Callable[[str], bool] = lambda device: True,
        on_published: Callable[[str], None] | None = None,
        gate: VendorGate | None = None,
        fence: Callable[[], None] | None = None,
        timing: ConfirmTiming | None = None,
    ) -> None:
        self.adapter = adapter
        self.owns = owns
        self.store = store
        self.options = options
        self.hold = HoldPolicy(devices=frozenset(options.hold))
        self.fields = adapter.desired_fields()
        self.actions = adapter.actions()
        self.devices: dict[str, DeviceState] = {}
        self.twins: dict[str, TwinRecord] = {}
        self.out = Outbound(
            topics=topics,
            store=store,
            held=self.hold.holds,
            current_of=self._in_flight,
            latest_of=self._latest,
            on_published=on_published,
        )
        self.lifecycle = Lifecycle(
            store=store,
            out=self.out,
            vendor=adapter.vendor,
            twins=self.twins,
            queued=self._queue,
            # once a command ended the store keeps its value redacted: no key, no card id
            settle=lambda cmd: keep_redacted(cmd, fields=self.fields, actions=self.actions, store=store),
        )
        self.plans = PlanRunner(lifecycle=self.lifecycle)
        # one gate for the adapter: the engines of a shared store's partitions pass theirs in
        kept = store if isinstance(store, Store) else None  # the ledger and timings: SQLite only
        self.gate = gate or vendor_gate(adapter, options, store=kept)
        #: raises when this engine may no longer act (its partition's lease is gone): checked right
        #: before every vendor call, so that an instance woken from a pause never sends one late
        self._fence = fence or (lambda: None)
        self.timing = timing or ConfirmTiming(
            prior=adapter.confirm_interval, longest=adapter.confirm_max_interval, store=kept
        )
        self._validators: dict[str, TypeAdapter[Any]] = {}
        #: commands one of whose calls got no answer: the vendor may have acted on it
        self._maybe_executed: set[str] = set()
        self._tg: TaskGroup | None = None
        self._default_expiry = options.default_expiry or adapter.default_expiry
        self.admission = Admission(
            store=store, default_expiry=self._default_expiry, max_expiry=options.max_expiry or adapter.max_expiry
        )
        self.reads = StatusReads(
            gate=self.gate,
            read_status=adapter.read_status,
            observe=lambda device, patch, source: self.observe(device, patch, source=source),
            out=self.out,
            get_interval=options.get_interval,
        )
        self.outage = StoreOutage(store=store, resave=self._resave)
        self.confirmation = Confirmation(
            gate=self.gate,
            timing=self.timing,
            store=store,
            read_status=adapter.read_status,
            observe=lambda device, patch: self.observe(device, patch, source="confirm"),
            finish=self._finish,
        )
        #: what extensions see of the fleet (twin.extensions.FleetView)
        self.fleet = EngineFleet(self)

    # -- start -----------------------------------------------------------------------------------
    async def start(self, tg: TaskGroup, devices: list[DeviceInfo]) -> None:
        """Load the store, adopt the adapter's devices, settle commands left by a previous run."""
        self._tg = tg
        self.outage.start(tg)
        tg.start_soon(self.out.run, self.options.publish_coalesce)
        self.gate.ledger.load()
        self.timing.load()
        self.twins.update(self.store.load_twins())
        listed = {d.id for d in devices}
        with self.store.transaction():
            for info in devices:
                twin = self.twins.get(info.id)
                # what the store proves was observed last: a replayed push older than it changes nothing
                self.devices[info.id] = DeviceState(info=info, watermark=watermarks(twin.metadata) if twin else {})
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
            outcome = settle_at_start(cmd, now=now, known=cmd.device in self.devices)
            if outcome is not None:
                self._finish(cmd, *outcome)
            else:
                self.devices[cmd.device].queue.append(cmd)
                self._kick(cmd.device)

    # -- accept ------------------------------------------------------------------------------------
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
        if not self.owns(inbound.device):
            return  # another shard's device: that shard answers
        if retained and not payload:
            return  # an empty retained payload clears a retained command from the broker: no command
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
            if inbound.kind == "get":
                transaction = parse_get(payload)
                assert self._tg is not None
                self._tg.start_soon(self.reads.serve_get, inbound.device, transaction, reply)
                return
            request = parse_command(
                "set" if inbound.kind == "set" else "action",
                inbound.action or "",
                payload,
                fields=self.fields,
                actions=self.actions,
                vendor=self.adapter.vendor,
            )
            self._intake(inbound.device, request, reply, arrival or Arrival())
        except Rejected as rej:
            self.refuse(inbound, payload, rej.error, transaction=rej.transaction, reply=reply)
        except StoreUnavailable as exc:
            error = ErrorInfo.of(
                ErrorCode.STORE_UNAVAILABLE, f"the bridge cannot store commands now: {exc}", retry_after=5.0
            )
            self.refuse(inbound, payload, error, transaction=best_effort_transaction(payload), reply=reply)

    def refuse(
        self,
        inbound: InboundTopic,
        payload: bytes,
        error: ErrorInfo,
        *,
        transaction: str | None = None,
        reply: ReplyTo | None = None,
    ) -> None:
        """Answer ``rejected``. A refused payload is not the answer of the stored command that has its
        transaction (a client keyed by transaction would take it for that command's outcome)."""
        if transaction is not None and self.store.command_by_transaction(inbound.device, transaction):
            transaction = None
        self.out.rejected(inbound.device, inbound.response_suffix, transaction, error, reply)

    def _intake(self, device: str, req: CommandRequest, reply: ReplyTo | None, arrival: Arrival) -> None:
        admitted = self.admission.admit(self.devices[device].info, req, twin=self.twins[device], arrival=arrival)
        if isinstance(admitted, CommandRecord):  # a replay: the same answers, no second vendor call
            suffix = "set" if admitted.kind == "set" else admitted.name
            self.out.answer(admitted, suffix, reply, status=CommandStatus.ACCEPTED)
            if admitted.status.is_final:
                self.out.answer(admitted, suffix, reply)
            return
        self.accept(
            device, req, expires_at=admitted.expires_at, source="mqtt", reply=reply, fingerprint=admitted.fingerprint
        )

    def accept(
        self,
        device: str,
        req: CommandRequest,
        *,
        expires_at: float,
        source: str,
        reply: ReplyTo | None,
        fingerprint: str | None = None,
    ) -> CommandRecord:
        """Store a command and answer ``accepted``; its worker runs it. A newer ``/set`` of a field
        supersedes the one of that field still waiting to be (re)sent."""
        cmd = new_command(device, req, expires_at=expires_at, source=source, reply=reply, fingerprint=fingerprint)
        rt = self.devices[device]
        superseded = [
            old
            for old in rt.queue
            if req.kind == "set" and old.kind == "set" and old.name == req.name and old.status == CommandStatus.ACCEPTED
        ]
        waiting = sum(not c.status.is_final for c in rt.queue) - len(superseded)
        if waiting >= self.options.max_queued:  # a burst of one device must not fill the disk
            busy = ErrorInfo.of(
                ErrorCode.DEVICE_BUSY, f"{device} has {waiting} commands waiting", retryable=True, retry_after=1.0
            )
            raise Rejected.of(busy, transaction=req.transaction)
        shown = public_value(
            req.kind, req.name, req.value, sensitive=req.sensitive, fields=self.fields, actions=self.actions
        )
        self.lifecycle.accept(
            cmd,
            self.twins[device],
            shown=shown,
            superseded=[(old, old.id in self._maybe_executed) for old in superseded],
            reply=reply,
        )

        def queued() -> None:
            self._maybe_executed.difference_update(old.id for old in superseded)
            rt.queue[:] = [c for c in rt.queue if not c.status.is_final]
            rt.queue.append(cmd)
            if superseded and rt.wake_retry is not None:
                rt.wake_retry.set()  # a worker waiting to retry what was just superseded moves on
            self._kick(device)

        # Run only once the command is stored: at once, unless the caller's transaction holds the
        # commit (a shared store's inbox row is consumed in it), whose rollback must leave no worker
        # sending a command nothing stored.
        self.store.after_commit(queued)
        return cmd

    # -- send and confirm --------------------------------------------------------------------------
    def _kick(self, device: str) -> None:
        rt = self.devices[device]
        if rt.worker_running or self._tg is None:
            return
        rt.worker_running = True
        self._tg.start_soon(self._work, device)

    async def _work(self, device: str) -> None:
        rt = self.devices[device]
        gauge = IN_FLIGHT.labels(self.adapter.vendor)
        try:
            while rt.queue:
                rt.current = rt.queue[0]
                gauge.inc()
                cmd = rt.current
                try:
                    await self._run(cmd)
                    await self.store.settled()  # its outcome is durable before the next command
                except StoreUnavailable:
                    await self.outage.back.wait()  # then the same command goes on where it stopped
                except LeaseLost as exc:  # the partition's engine ends: its next owner goes on
                    log.info("worker of %s ends: %s", device, exc)
                    return
                finally:
                    rt.current = None
                    gauge.dec()
                if rt.queue and rt.queue[0] is cmd and cmd.status.is_final:
                    # ended in memory, not in the store: never spin on it (the next start settles it)
                    log.error("command %s of %s ended without its outcome stored", cmd.id, device)
                    rt.queue.pop(0)
        except Exception:
            log.exception("worker of %s failed", device)
        finally:
            rt.worker_running = False

    async def _run(self, cmd: CommandRecord) -> None:
        while not cmd.status.is_final:
            pending = self.outage.pending.get(cmd.id)
            if pending is not None:  # decided while the store could not write it
                self._finish(cmd, pending[0], pending[1], data=pending[2])
            elif cmd.status == CommandStatus.ACKNOWLEDGED:
                if cmd.expires_at - time.time() <= 0:
                    self._finish(cmd, *at_expiry(cmd, maybe_executed=cmd.id in self._maybe_executed))
                else:
                    await self.confirmation.wait(cmd, self.devices[cmd.device])
            elif (left := cmd.expires_at - time.time()) <= 0 or left < self.gate.send_margin:  # no time to reach it
                self._finish(cmd, *at_expiry(cmd, maybe_executed=cmd.id in self._maybe_executed))
            else:
                await self._send(cmd)

    async def _send(self, cmd: CommandRecord) -> None:
        cmd.attempts += 1
        self.lifecycle.step(cmd, CommandStatus.SENT, journal={"attempt": cmd.attempts})
        # durable before the call: a crash after it never sends the command again as if it had not been
        await self.store.settled()
        ctx = CommandContext(
            command_id=cmd.id,
            transaction=cmd.transaction,
            device_id=cmd.device,
            name=cmd.name,
            expires_at=iso(cmd.expires_at),
            attempt=cmd.attempts,
        )
        planned = cmd.kind == "set" and self.fields[cmd.name].plan is not None
        try:
            result = await self.gate.call(
                lambda: self._execute(cmd, ctx),
                operation=cmd.name,
                deadline=cmd.expires_at,
                whole=planned,
                device=cmd.device,
            )
        except TooLate as exc:
            status, error = at_expiry(cmd, maybe_executed=cmd.id in self._maybe_executed)
            self._finish(cmd, status, exc.info if status == CommandStatus.EXPIRED else error)
            return
        except VendorError as exc:
            await self._retry_or_fail(cmd, exc)
            return
        if cmd.kind == "action":
            if result.reported is not None:  # a read action refreshes the twin too
                self.observe(cmd.device, result.reported, source="action")
            cmd.result = None if cmd.sensitive else result.data
            self._finish(cmd, CommandStatus.SUCCEEDED, None, data=result.data)
            return
        cmd.acked_at = time.time()
        cmd.result = result.data
        self.devices[cmd.device].confirmed_by = None
        self.lifecycle.step(cmd, CommandStatus.ACKNOWLEDGED, journal={"acknowledged": True})
        if result.reported is not None:
            self.observe(cmd.device, result.reported, source="command")

    async def _retry_or_fail(self, cmd: CommandRecord, exc: VendorError) -> None:
        cmd.error = exc.info.model_dump()
        if exc.maybe_executed:
            self._maybe_executed.add(cmd.id)
            if not cmd.idempotent:
                self._finish(cmd, CommandStatus.FAILED, unanswered("an action is never sent twice"))
                return
        if exc.info.code == ErrorCode.DEVICE_OFFLINE:
            self.observe(cmd.device, ReportedPatch(values={"online": False}), source="command")
        if not exc.info.retryable:
            self._finish(cmd, CommandStatus.FAILED, exc.info)
            return
        self.lifecycle.step(cmd, CommandStatus.ACCEPTED, journal={"retry": exc.info.model_dump()})
        delay = min(self.options.retry_cap, self.options.retry_base * 2 ** (cmd.attempts - 1))
        delay = max(delay * random.uniform(0.5, 1.0), exc.info.retry_after or 0.0)
        rt = self.devices[cmd.device]
        rt.wake_retry = wake = anyio.Event()
        try:
            # past expiry less the send margin it could not be sent in time: it ends then
            with anyio.move_on_after(min(delay, max(0.0, cmd.expires_at - self.gate.send_margin - time.time()))):
                await wake.wait()
        finally:
            rt.wake_retry = None

    async def _execute(self, cmd: CommandRecord, ctx: CommandContext) -> ExecuteResult:
        self._fence()
        if cmd.kind == "set":
            desired = self.fields[cmd.name]
            validator = self._validators.get(cmd.name)
            if validator is None:  # built once per field: building one costs more than the validation
                validator = self._validators[cmd.name] = TypeAdapter(desired.type)
            value = validator.validate_python(cmd.value)
            if desired.plan is not None:
                ops = await desired.plan(cmd.device, value, ctx)
                return await self.plans.run(cmd, ops, ctx)
            return await self.adapter.set_desired(cmd.device, cmd.name, value, ctx)
        action = self.actions[cmd.name]
        return await action.handler(cmd.device, action.arguments.model_validate(cmd.value), ctx)

    def _finish(
        self, cmd: CommandRecord, status: CommandStatus, error: ErrorInfo | None, *, data: dict[str, Any] | None = None
    ) -> None:
        def ended() -> None:  # once the outcome is durable (this commit, or the outer one joined)
            self.outage.pending.pop(cmd.id, None)
            self._maybe_executed.discard(cmd.id)
            rt = self.devices.get(cmd.device)
            if rt is not None and cmd.parent is None:
                rt.queue[:] = [c for c in rt.queue if c.id != cmd.id]

        def lost() -> None:  # the store could not take it: decided again once it can (twin.outage)
            if cmd.parent is None:
                self.outage.pending[cmd.id] = (status, error, data)

        with self.store.transaction():
            self.store.on_rollback(lost)
            self.lifecycle.finish(cmd, status, error, data=data)
            self.store.after_commit(ended)

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
        rt.observed = time.monotonic()
        found = merge(
            twin.reported,
            patch,
            rt.watermark,
            now=time.time(),
            source=source,
            secret_fields=self.adapter.secret_fields,
            max_ahead=self.options.max_observation_ahead,
        )
        if found.clamped:
            OBSERVATIONS_CLAMPED.labels(self.adapter.vendor).inc(len(found.clamped))
            log.warning(
                "%s of %s: the vendor's time is ahead of ours, counted as received now", found.clamped, device_id
            )
        found.apply(twin.reported, twin.metadata, rt.watermark)
        inflight = self._in_flight(device_id)
        # Only observations made after the vendor accepted the command can confirm (or refute) it.
        if inflight is not None and inflight.status == CommandStatus.ACKNOWLEDGED and inflight.kind == "set":
            desired = self.fields[inflight.name]
            if desired.confirmed(inflight.value, twin.reported):
                rt.confirmed_by = inflight.id
            elif (why := desired.refuted(inflight.value, twin.reported)) is not None:
                rt.refuted = (inflight.id, why)
        if found.changes:
            twin.version += 1
            with self.store.transaction():
                # observed, not stored: saved and published once the store can (twin.outage)
                self.store.on_rollback(lambda: self.outage.unsaved.add(device_id))
                self.store.save_twin(twin)
                self.store.journal(
                    entry="state",
                    device=device_id,
                    source=source,
                    data={k: {"from": a, "to": b} for k, (a, b) in found.changes.items()},
                )
            self.out.twin_changed(device_id)
            if "online" in found.changes:
                self.out.availability(device_id)
            self._drift(device_id, found.changes, inflight, source)
        if rt.reported_changed is not None:
            rt.reported_changed.set()
            rt.reported_changed = None
        return True

    def _drift(
        self, device: str, changes: dict[str, tuple[Any, Any]], inflight: CommandRecord | None, source: str
    ) -> None:
        for name, (before, after) in changes.items():
            if name not in self.fields or before is None:
                continue
            if inflight is not None and inflight.kind == "set" and inflight.name == name:
                continue
            self.out.event(device, EventType.DRIFT, {"field": name, "from": before, "to": after, "source": source})
            restore = self.hold.restores(device, name, after, capability=self.fields[name].capability)
            if restore is not None:
                self.accept(device, restore, expires_at=time.time() + self._default_expiry, source="hold", reply=None)

    async def event(self, device_id: str, type: EventType, data: dict[str, Any]) -> None:
        if device_id in self.devices:
            self.store.journal(entry=f"event.{type.value}", device=device_id, source="vendor", data=data)
            self.out.event(device_id, type, data)

    def _resave(self, device: str) -> None:
        with self.store.transaction():
            self.store.on_rollback(lambda: self.outage.unsaved.add(device))  # a commit decided later
            self.store.save_twin(self.twins[device])
        self.out.twin_changed(device)

    # -- what the documents show -------------------------------------------------------------------
    def _queue(self, device: str) -> list[CommandRecord]:
        rt = self.devices.get(device)
        return [] if rt is None else rt.queue

    def _latest(self, device: str) -> CommandRecord | None:
        rt = self.devices.get(device)
        return None if rt is None else rt.current

    def _in_flight(self, device: str) -> CommandRecord | None:
        rt = self.devices.get(device)
        cmd = None if rt is None else rt.current
        return cmd if cmd is not None and not cmd.status.is_final else None


def vendor_gate(adapter: Adapter[Any], options: BridgeOptions, *, store: Store | None = None) -> VendorGate:
    """The gate of an adapter's calls as the options and the vendor's defaults say (``store``
    keeps its budget ledger across restarts)."""
    return VendorGate(
        vendor=adapter.vendor,
        limit=options.max_in_flight or adapter.max_in_flight,
        initial=options.initial_in_flight or adapter.initial_in_flight,
        floor=options.min_in_flight,
        call_timeout=options.call_timeout,
        send_margin=adapter.send_margin if options.send_margin is None else options.send_margin,
        ledger=Ledger(vendor=adapter.vendor, budget=options.budget, device_budget=options.device_budget, store=store),
    )
