"""Partitions and leases: which instance serves which devices (issue 22).

A vendor's devices fall into a fixed number of partitions by their stable hash
(:meth:`twin.shard.Shard.slot`). Each partition, and the intake session (:data:`twin.pgschema.INTAKE`),
is leased to one live instance in the ``leases`` table, with an epoch that every write carries
(``fence()``, :mod:`twin.pgschema`). Each instance runs :meth:`LeaseManager.tick` about once a second
on the store's connection, in two round trips that never leave a transaction open:

1. a snapshot (no locks): the members, which of them are alive, every lease and when it expires;
2. one pipelined write: its heartbeat, the renewal of what it holds, and the acquisition of what it
   should hold and may take.

**Alive** is two facts: a heartbeat younger than the lease time, and the member's session advisory
lock, which the instance takes on the store's connection at start and which PostgreSQL drops the
moment that connection ends (a SIGKILL closes it at once). A partition may be taken when it is free
(released by a clean stop or a rebalance), when its lease ran out (a paused or cut-off holder: only
after ``lease_seconds``), or when its holder's session is gone (a crash: at the next tick).

**Balance.** Live members sorted by start time each get ``P // n`` partitions, the first ``P % n``
one more; a member over its quota releases the extra ones after its engines of them stopped
(:meth:`release`), a member under it takes free or takeable ones. Joining or leaving moves only what
the quotas need. The intake goes to whichever live member finds it free first.

**Locally**, a lease is valid until the monotonic time its last renewal was sent plus the lease time
less :data:`MARGIN`; the database's ``expires_at`` is later than that, so an instance stops using a
lease (writing, publishing, calling the vendor) before anyone else may take it. A process woken from
a long pause finds its deadlines passed before it does anything else.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from twin.metrics import LEASES_ACQUIRED, LEASES_HELD, LEASES_LOST
from twin.pgdb import PgDatabase
from twin.pgschema import INTAKE, LockKeys
from twin.storeapi import StoreError

__all__ = ["MARGIN", "Lease", "LeaseChanges", "LeaseManager", "new_owner"]

log = logging.getLogger(__name__)

#: seconds before the database's expiry at which an instance stops using a lease itself
MARGIN = 0.5
#: seconds between ticks at most (a tick is due sooner when a lease it waits for runs out sooner)
TICK = 1.0


def new_owner(name: str) -> str:
    """The owner token of one run of an instance: its name and a random part, so that a restarted
    instance is a new member and its previous run's leases are taken over, not silently resumed."""
    return f"{name}#{uuid.uuid4().hex[:8]}"


@dataclass
class Lease:
    partition: int
    epoch: int
    deadline: float

    def valid(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.deadline


@dataclass
class LeaseChanges:
    """What a tick changed: leases acquired (to adopt), lost (to drop at once), over quota (to
    release once their engines stopped)."""

    acquired: list[Lease] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    next_tick: float = TICK


class LeaseManager:
    def __init__(self, *, db: PgDatabase, vendor: str, name: str, lease_seconds: float) -> None:
        self.db = db
        self.vendor = vendor
        self.name = name
        self.owner = db.owner
        self.lease_seconds = lease_seconds
        self.keys = LockKeys(db.schema)
        self.held: dict[int, Lease] = {}
        self._lock_key: int | None = None
        #: partitions being released (kept renewed until their engines stopped)
        self.releasing: set[int] = set()

    # -- membership ------------------------------------------------------------------------------
    def join(self) -> None:
        """Register this run as a member and take its session lock (the proof it is alive)."""
        with self.db.reading() as conn:
            row = conn.execute("SELECT nextval('member_keys')").fetchone()
            assert row is not None
            key = int(row[0]) & 0x7FFFFFFF
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.keys.member, key)).fetchone()
            if got is None or not got[0]:
                raise StoreError(f"member lock {key} is taken: another run holds it")
            conn.execute(
                "INSERT INTO members(owner, name, lock_key, started_at, heartbeat_at) "
                "VALUES (%s, %s, %s, clock_timestamp(), clock_timestamp())",
                (self.owner, self.name, key),
            )
            conn.execute("DELETE FROM members WHERE heartbeat_at < clock_timestamp() - interval '1 hour'")
        self._lock_key = key

    def leave(self) -> None:
        """A clean stop: every lease released (others take them at their next tick), membership ended."""
        try:
            with self.db.reading() as conn:
                conn.execute(
                    "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE owner = %s", (self.owner,)
                )
                conn.execute("DELETE FROM members WHERE owner = %s", (self.owner,))
        except Exception as exc:  # the store is gone: the leases run out by themselves
            log.warning("could not release the leases at stop: %s", exc)
        for partition in list(self.held):
            self._drop(partition)

    # -- the tick --------------------------------------------------------------------------------
    def valid(self, partition: int) -> bool:
        lease = self.held.get(partition)
        return lease is not None and lease.valid()

    def expire_local(self) -> list[int]:
        """Leases whose local deadline passed (a pause, a store too slow to renew): dropped now."""
        now = time.monotonic()
        gone = [p for p, lease in self.held.items() if not lease.valid(now)]
        for partition in gone:
            self.lose(partition, "its local deadline passed before a renewal")
        return gone

    def tick(self) -> LeaseChanges:
        changes = LeaseChanges(lost=self.expire_local())
        sent = time.monotonic()
        members, leases = self._snapshot()
        live = sorted((m for m in members if m["alive"]), key=lambda m: (m["started_at"], m["owner"]))
        owners = [m["owner"] for m in live]
        # a member whose session lock is held is not dead, only perhaps paused: its leases run out
        sessions = {m["owner"] for m in members if m["locked"]}
        if self.owner not in owners:
            owners.append(self.owner)  # our heartbeat is part of this tick
        quota = self._quota(owners)
        held = [p for p in self.held if p != INTAKE]
        over = max(0, len(held) - quota)
        keep = sorted(p for p in held if p not in self.releasing)
        changes.release = [p for p in keep[len(keep) - over :] if over] if over else []
        self.releasing.update(changes.release)
        wanted = max(0, quota - len(held))
        takeable = [
            row
            for row in leases
            if row["partition"] not in self.held
            and (row["owner"] is None or row["expired"] or row["owner"] not in sessions)
        ]
        intake = [r for r in takeable if r["partition"] == INTAKE]
        take = intake + [r for r in takeable if r["partition"] != INTAKE][:wanted]
        written = self._write(list(self.held), take)
        if written is None:
            return changes  # nothing renewed nor taken this time; the local deadlines still hold
        renewed, acquired = written
        deadline = sent + self.lease_seconds - MARGIN
        for partition in list(self.held):
            if renewed.get(partition) == self.held[partition].epoch:
                self.held[partition].deadline = deadline
            else:
                self.lose(partition, "another instance took it over")
                changes.lost.append(partition)
        for partition, (epoch, previous, how) in acquired.items():
            lease = Lease(partition, epoch, deadline)
            self.held[partition] = lease
            changes.acquired.append(lease)
            LEASES_ACQUIRED.labels(self.vendor, how).inc()
            log.info(
                "acquired partition %s (epoch %s, %s%s)", partition, epoch, how, f" from {previous}" * bool(previous)
            )
        LEASES_HELD.labels(self.vendor).set(len([p for p in self.held if p != INTAKE]))
        # the next tick comes when the first lease we may want runs out, if that is sooner
        waits = [r["expires_in"] for r in leases if r["owner"] not in (None, self.owner) and r["expires_in"] > 0]
        if waits and (wanted > len(take) or not any(r["partition"] == INTAKE for r in take)):
            changes.next_tick = max(0.05, min(TICK, min(waits) + 0.05))
        return changes

    def _quota(self, owners: list[str]) -> int:
        partitions = self.db.partitions
        n = max(1, len(owners))
        index = owners.index(self.owner)
        return partitions // n + (1 if index < partitions % n else 0)

    def _snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.db.reading() as conn:
            locked = {
                int(r[0])
                for r in conn.execute(
                    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 "
                    "AND granted",
                    (self.keys.member,),
                ).fetchall()
            }
            members = [
                {"owner": r[0], "alive": r[1] in locked and r[2], "locked": r[1] in locked, "started_at": r[3]}
                for r in conn.execute(
                    "SELECT owner, lock_key, heartbeat_at > clock_timestamp() - %s * interval '1 second', "
                    "started_at FROM members",
                    (self.lease_seconds,),
                ).fetchall()
            ]
            leases = [
                {
                    "partition": r[0],
                    "owner": r[1],
                    "expired": bool(r[2]),
                    "expires_in": float(r[3] or 0.0),
                }
                for r in conn.execute(
                    "SELECT partition, owner, expires_at IS NULL OR expires_at < clock_timestamp(), "
                    "EXTRACT(EPOCH FROM expires_at - clock_timestamp()) FROM leases ORDER BY partition"
                ).fetchall()
            ]
        return members, leases

    def _write(
        self, renew: list[int], take: list[dict[str, Any]]
    ) -> tuple[dict[int, int], dict[int, tuple[int, str | None, str]]] | None:
        """Renew ``renew`` and take ``take`` in one pipelined transaction: what was renewed (with its
        epoch) and what was acquired; None when the transaction waited too long for a lock (a
        takeover of the same rows by another member): the next tick tries again."""
        ttl = self.lease_seconds
        conn = self.db.conn
        try:
            with conn.pipeline(), conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '500ms'")
                conn.execute("UPDATE members SET heartbeat_at = clock_timestamp() WHERE owner = %s", (self.owner,))
                cur = conn.execute(
                    "UPDATE leases SET expires_at = clock_timestamp() + %s * interval '1 second' "
                    "WHERE owner = %s AND partition = ANY(%s) RETURNING partition, epoch",
                    (ttl, self.owner, renew),
                )
                takes = []
                for row in take:
                    how = "free" if row["owner"] is None else "expired" if row["expired"] else "dead"
                    taken = conn.execute(
                        "WITH old AS (SELECT owner FROM leases WHERE partition = %s) "
                        "UPDATE leases SET owner = %s, epoch = epoch + 1, "
                        "expires_at = clock_timestamp() + %s * interval '1 second' "
                        "WHERE partition = %s AND owner IS NOT DISTINCT FROM %s "
                        "AND pg_try_advisory_xact_lock(%s, partition) RETURNING epoch, (SELECT owner FROM old)",
                        (row["partition"], self.owner, ttl, row["partition"], row["owner"], self.keys.partition),
                    )
                    takes.append((row["partition"], how, taken))
                for partition, how, _ in takes:
                    conn.execute(
                        "INSERT INTO lease_log(partition, epoch, owner, previous, how) "
                        "SELECT partition, epoch, owner, %s, %s FROM leases WHERE partition = %s AND owner = %s",
                        (next(r["owner"] for r in take if r["partition"] == partition), how, partition, self.owner),
                    )
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            log.info("lease tick: %s; the next tick tries again", str(exc).strip().splitlines()[0])
            return None
        except psycopg.Error as exc:
            raise self.db.failure(exc, None) from exc
        renewed = {int(r[0]): int(r[1]) for r in cur.fetchall()}
        acquired: dict[int, tuple[int, str | None, str]] = {}
        for partition, how, taken in takes:
            got = taken.fetchone()
            if got is not None:
                acquired[partition] = (int(got[0]), got[1], how)
        return renewed, acquired

    def release(self, partition: int) -> None:
        """Give a partition up (its engine has stopped): free for the member whose quota wants it."""
        lease = self.held.get(partition)
        self.releasing.discard(partition)
        if lease is None:
            return
        try:
            with self.db.reading() as conn:
                conn.execute(
                    "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() "
                    "WHERE partition = %s AND owner = %s AND epoch = %s",
                    (partition, self.owner, lease.epoch),
                )
        finally:
            self._drop(partition)

    def lose(self, partition: int, why: str) -> None:
        """The partition is no longer ours (a fence refused us, its engine ended): dropped now."""
        if partition in self.held:
            LEASES_LOST.labels(self.vendor).inc()
            log.warning("lost partition %s: %s", partition, why)
            self._drop(partition)

    def _drop(self, partition: int) -> None:
        self.held.pop(partition, None)
        self.releasing.discard(partition)
        LEASES_HELD.labels(self.vendor).set(len([p for p in self.held if p != INTAKE]))
