"""The keep-locked rule of no-parking and no-ride zones.

A device found UNLOCKED inside a zone with the ``keep_locked`` rule, with no command of its own
behind that state, is sent a lock command. "Its own command" is the device's latest command as its
twin shows it: an unlock that is in flight or succeeded (a rental, an operator, a fire-drill job)
is left alone; an UNLOCKED state with any other latest command (none, a lock, a failed unlock) was
not asked for, and is locked. A device with a command in flight, or that its bridge reports
offline, is left until that changes.

Each rule command is stored and journaled with ``rule:keep_locked:<zone>`` as its source before it
goes out, under the transaction ``fleet:rule:<n>:<device digest>``; after a restart those still in
flight are sent again under the same transaction. After a failure the device is left alone for
``rule_retry`` seconds; a periodic sweep picks it up again.
"""

from __future__ import annotations

import logging
import time

import anyio

from contracts.fleet import ZoneRule
from contracts.messages import CommandStatus, LockState
from twin.fleet.commands import CommandSender, FleetCommand, Outcome, device_digest
from twin.fleet.index import DeviceRecord, FleetIndex, device_key
from twin.fleet.store import FleetStore
from twin.fleet.zones import ZoneBook

__all__ = ["KeepLocked"]

log = logging.getLogger(__name__)

_OWN = frozenset(
    {
        CommandStatus.ACCEPTED.value,
        CommandStatus.SENT.value,
        CommandStatus.ACKNOWLEDGED.value,
        CommandStatus.SUCCEEDED.value,
    }
)
SWEEP_INTERVAL = 5.0


class KeepLocked:
    def __init__(
        self,
        *,
        store: FleetStore,
        index: FleetIndex,
        zones: ZoneBook,
        sender: CommandSender,
        timeout: float,
        retry: float,
    ) -> None:
        self.store = store
        self.index = index
        self.zones = zones
        self.sender = sender
        self.timeout = timeout
        self.retry = retry
        #: False while the retained states load after a start
        self.live = False
        #: device key -> transaction of its rule command in flight
        self.outstanding: dict[str, str] = {}
        self._quiet_until: dict[str, float] = {}

    def load(self) -> None:
        """Rule commands a previous process left in flight: sent again under their transactions."""
        for txn, _rule, _zone, vendor, device, issued_at, timeout in self.store.open_rule_commands():
            self.outstanding[device_key(vendor, device)] = txn
            self.sender.send(self._command(vendor, device, txn, issued_at, timeout), again=True)

    def consider(self, rec: DeviceRecord) -> None:
        if not self.live or rec.lock != LockState.UNLOCKED.value or rec.pending or rec.online is False:
            return
        if rec.key in self.outstanding or rec.key in self.index.unlisted:
            return
        zone = self.zones.keep_locked(rec)
        if zone is None or time.monotonic() < self._quiet_until.get(rec.key, 0.0):
            return
        cmd = rec.command
        own = cmd is not None and cmd.kind == "set" and cmd.name == "lock" and cmd.value == LockState.UNLOCKED.value
        if own and cmd is not None and cmd.status in _OWN:
            return  # unlocked on purpose
        seq = self.store.next_sequence("rule")
        txn = f"fleet:rule:{seq}:{device_digest(rec.vendor, rec.device)}"
        now = time.time()
        source = f"rule:{ZoneRule.KEEP_LOCKED.value}:{zone}"
        with self.store.transaction():
            self.store.insert_rule_command(
                txn=txn,
                rule=ZoneRule.KEEP_LOCKED.value,
                zone=zone,
                vendor=rec.vendor,
                device=rec.device,
                issued_at=now,
                timeout=self.timeout,
            )
            self.store.journal(
                "rule.lock",
                source=source,
                vendor=rec.vendor,
                device=rec.device,
                txn=txn,
                data={"lock": rec.lock, "last_command": None if cmd is None else cmd.transaction},
            )
        self.outstanding[rec.key] = txn
        log.info("%s: %s is UNLOCKED inside %s with no command of its own; locking it", source, rec.key, zone)
        self.sender.send(self._command(rec.vendor, rec.device, txn, now, self.timeout))

    def _command(self, vendor: str, device: str, txn: str, issued_at: float, timeout: float) -> FleetCommand:
        return FleetCommand(
            vendor=vendor,
            device=device,
            kind="set",
            name="lock",
            value=LockState.LOCKED.value,
            transaction=txn,
            issued_at=issued_at,
            timeout=timeout,
            on_final=self._answered,
        )

    def _answered(self, cmd: FleetCommand, outcome: Outcome) -> None:
        key = device_key(cmd.vendor, cmd.device)
        self.outstanding.pop(key, None)
        status = "SUCCEEDED" if outcome.status == "succeeded" else "FAILED"
        self.store.finish_rule_command(cmd.transaction, status, outcome.error)
        self.store.journal(
            "rule.outcome",
            source=f"rule:{ZoneRule.KEEP_LOCKED.value}",
            vendor=cmd.vendor,
            device=cmd.device,
            txn=cmd.transaction,
            data={"status": outcome.status, "error": outcome.error},
        )
        if outcome.status != "succeeded":
            self._quiet_until[key] = time.monotonic() + self.retry

    async def sweep(self) -> None:
        """Look at every device inside a keep-locked zone now and then (retries, missed changes)."""
        while True:
            await anyio.sleep(SWEEP_INTERVAL)
            self.sweep_once()

    def sweep_once(self) -> None:
        for zone_id, zone in self.zones.zones.items():
            if ZoneRule.KEEP_LOCKED in zone.rules:
                for key in list(self.index.by_zone.get(zone_id, ())):
                    rec = self.index.records.get(key)
                    if rec is not None:
                        self.consider(rec)
