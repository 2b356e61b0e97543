"""What the engine needs of a twin store, and the records it keeps.

Two stores implement :class:`TwinStore`: :class:`twin.store.Store` (one SQLite file per adapter, the
default) and :class:`twin.pgstore.PartitionStore` (one partition of a PostgreSQL database that
several bridge instances share, every write fenced by the partition's lease). The engine, the
lifecycle, admission, the outbound renderer, the session clock and retention see only this.

The discipline both keep: :meth:`TwinStore.transaction` nests, an inner one joining the outermost;
:meth:`TwinStore.after_commit` holds what must not be seen before the write is durable until the
outermost commit (and drops it on a rollback), and :meth:`TwinStore.on_rollback` undoes what a writer
changed in memory when that commit is lost; :meth:`TwinStore.mark_answered` is deferred to the next
commit or :meth:`TwinStore.flush`. A write that cannot be stored raises :class:`StoreUnavailable` with
nothing of the transaction kept (a full disk; for PostgreSQL also a broken connection), and the
store tells its :attr:`TwinStore.writable_listeners` until :meth:`TwinStore.probe` finds it writing
again. The PostgreSQL store raises :class:`LeaseLost` when the partition's lease is gone, which ends
the partition's engine (another instance serves it from the store).

A store may commit after the block closed (PostgreSQL's group commit, :mod:`twin.pgwriter`): then
what refused it is raised by :meth:`TwinStore.settled`, which whatever must follow a durable write
awaits (a vendor call after the ``sent`` step). SQLite commits when the block closes.

Exceptions::

    StoreError          the store cannot be used at all (a damaged file, a schema that does not fit)
    StoreUnavailable    a write or read was refused now and rolled back (a full disk, a read-only
                        file, a database that does not answer)
    LeaseLost           (PostgreSQL) the partition's lease moved on: its engine ends
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from contracts.messages import CommandStatus

__all__ = ["CommandRecord", "LeaseLost", "StoreError", "StoreUnavailable", "TwinRecord", "TwinStore"]


@dataclass(kw_only=True)
class TwinRecord:
    device: str
    version: int = 0
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    command_id: str | None = None
    present: bool = True


@dataclass(kw_only=True)
class CommandRecord:
    id: str
    seq: int = 0
    device: str
    transaction: str | None
    kind: Literal["set", "action"]
    name: str
    value: Any
    status: CommandStatus
    source: str
    accepted_at: float
    expires_at: float
    updated_at: float
    attempts: int = 0
    idempotent: bool = True
    sensitive: bool = False
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    reply_topic: str | None = None
    correlation: bytes | None = None
    answered: bool = False
    acked_at: float | None = None
    #: the command this one is a planned operation of (e.g. one card issued for a ``cards`` /set)
    parent: str | None = None
    #: what was asked (:meth:`Store.fingerprint`): a transaction reused for another command is refused
    fingerprint: str | None = None


class StoreError(Exception):
    """The store cannot be used at all (a damaged, truncated or unreadable file): one line naming
    the file and what is wrong."""


class StoreUnavailable(Exception):
    """The store cannot write now (a full disk, an I/O error, a read-only file): the transaction was
    rolled back, so nothing of it is stored and nothing it would have announced was sent."""


class LeaseLost(Exception):
    """A commit for a partition was refused: its lease moved on to another instance (or this one's
    local deadline passed). Not a :class:`StoreUnavailable`: nothing is answered for it; the
    partition's engine ends and whoever holds the lease next serves it from the store."""

    def __init__(self, partition: int, why: str) -> None:
        super().__init__(f"partition {partition}: {why}")
        self.partition = partition


class TwinStore(Protocol):
    """Durable twins, commands, refusals, meta and journal of one adapter (or of one partition of it)."""

    #: called with the new state when writes start failing or succeed again
    writable_listeners: list[Callable[[bool], None]]

    @property
    def unwritable(self) -> str | None:
        """Why the last write failed; None while writes succeed."""

    @property
    def writable(self) -> bool: ...

    @property
    def in_transaction(self) -> bool: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def after_commit(self, fn: Callable[[], None]) -> None: ...

    async def settled(self) -> None:
        """Until every transaction the calling task closed is durable (at once where commits are
        synchronous); raises what refused one (:class:`StoreUnavailable`, :class:`LeaseLost`)."""

    def on_rollback(self, fn: Callable[[], None]) -> None: ...

    def forget_old_copies(self) -> None: ...

    def flush(self) -> None: ...

    def probe(self) -> bool: ...

    def meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def fingerprint(self, kind: str, name: str, value: Any) -> str: ...

    def load_twins(self) -> dict[str, TwinRecord]: ...

    def save_twin(self, twin: TwinRecord) -> None: ...

    def insert_command(self, cmd: CommandRecord) -> None: ...

    def update_command(self, cmd: CommandRecord) -> None: ...

    def mark_answered(self, command_id: str) -> None: ...

    def command(self, command_id: str) -> CommandRecord | None: ...

    def command_by_transaction(self, device: str, transaction: str) -> CommandRecord | None: ...

    def open_commands(self, device: str | None = None) -> list[CommandRecord]: ...

    def unanswered_finals(self) -> list[CommandRecord]: ...

    def refuse(self, device: str, transaction: str, fingerprint: str, error: dict[str, Any]) -> None: ...

    def refusal(self, device: str, transaction: str, fingerprint: str) -> dict[str, Any] | None: ...

    def journal(
        self,
        *,
        entry: str,
        device: str | None,
        source: str,
        data: dict[str, Any],
        command_id: str | None = None,
        transaction: str | None = None,
    ) -> None: ...

    def prune_journal(self, *, before: float, limit: int) -> int: ...

    def prune_commands(self, *, before: float, limit: int) -> int: ...

    def journal_entries(self, device: str | None = None) -> list[dict[str, Any]]: ...
