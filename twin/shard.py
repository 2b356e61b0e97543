"""Sharding one vendor's fleet over several bridge processes (``locktwin run <vendor> --shard I/N``).

A device belongs to exactly one shard: the one its stable hash (BLAKE2b of the id, not Python's
salted ``hash``) selects. Every shard subscribes to the vendor's command topics and silently ignores
devices it does not own, so commands of one device are still served by one process, in order, on
any broker or broker cluster. Shards are numbered from 0, like StatefulSet ordinals.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["Shard"]

_SPEC = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        match = _SPEC.match(spec.strip())
        if match is None:
            raise ValueError(f"--shard takes I/N (e.g. 0/2), not {spec!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @staticmethod
    def slot(device_id: str, count: int) -> int:
        digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % count

    def owns(self, device_id: str) -> bool:
        return self.count == 1 or self.slot(device_id, self.count) == self.index

    @property
    def label(self) -> str:
        return f"{self.index}-of-{self.count}"
