"""Topic names of the contract, built and parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["InboundTopic", "Topics"]

InboundKind = Literal["set", "get", "request"]


@dataclass(frozen=True)
class InboundTopic:
    device: str
    kind: InboundKind
    action: str | None = None

    @property
    def response_suffix(self) -> str:
        return self.action if self.kind == "request" and self.action else self.kind


@dataclass(frozen=True)
class Topics:
    """All topics of one vendor under one base topic."""

    base: str
    vendor: str
    #: ``I-of-N`` when the vendor's fleet is sharded: each shard has its own bridge topics
    shard: str | None = None

    def device(self, device: str, leaf: str) -> str:
        return f"{self.base}/{self.vendor}/{device}/{leaf}"

    def state(self, device: str) -> str:
        return self.device(device, "state")

    def twin(self, device: str) -> str:
        return self.device(device, "twin")

    def availability(self, device: str) -> str:
        return self.device(device, "availability")

    def event(self, device: str) -> str:
        return self.device(device, "event")

    def response(self, device: str, suffix: str) -> str:
        return self.device(device, f"response/{suffix}")

    @property
    def _bridge(self) -> str:
        if self.shard is None:
            return f"{self.base}/bridge/{self.vendor}"
        return f"{self.base}/bridge/{self.vendor}/shards/{self.shard}"

    @property
    def bridge_state(self) -> str:
        return f"{self._bridge}/state"

    @property
    def bridge_health(self) -> str:
        return f"{self._bridge}/health"

    @property
    def bridge_budget(self) -> str:
        return f"{self._bridge}/budget"

    @property
    def bridge_devices(self) -> str:
        return f"{self._bridge}/devices"

    @property
    def bridge_session_marker(self) -> str:
        """Where the bridge marks the end of its session's backlog after connecting (twin.session);
        only the bridge subscribes to it."""
        return f"{self._bridge}/session"

    def bridge_instance(self, instance: str, leaf: str) -> str:
        """An instance's own topic (``state``, ``partitions``) when several share a PostgreSQL store."""
        return f"{self._bridge}/instances/{instance}/{leaf}"

    @property
    def bridge_actions(self) -> str:
        return f"{self._bridge}/actions"

    def bridge_devices_page(self, page: int) -> str:
        """Where page ``page`` of the device list is retained (page 0: :attr:`bridge_devices`)."""
        return self.bridge_devices if page == 0 else f"{self._bridge}/devices/{page}"

    @property
    def subscriptions(self) -> tuple[str, ...]:
        prefix = f"{self.base}/{self.vendor}/+"
        return (f"{prefix}/set", f"{prefix}/get", f"{prefix}/request/+")

    def parse(self, topic: str) -> InboundTopic | None:
        """The inbound topic's meaning, or None when it is not one of ours or malformed."""
        prefix = f"{self.base}/{self.vendor}/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] in ("set", "get"):
            kind: InboundKind = "set" if parts[1] == "set" else "get"
            return InboundTopic(device=parts[0], kind=kind)
        if len(parts) == 3 and parts[1] == "request":
            return InboundTopic(device=parts[0], kind="request", action=parts[2])
        return None
