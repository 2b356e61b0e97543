"""Pushes of the simulated cloud to the integrator's webhook: form-encoded, signed, retried once.

The signature is computed here on its own, from the document's recipe, without the bridge's code:
``md5hex("k1=v1&k2=v2...&client_secret=<secret>")`` over every field but the signature, keys sorted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

__all__ = [
    "DEFAULT_RETRY_DELAY",
    "PushRecord",
    "Pusher",
    "sign_push",
]

log = logging.getLogger(__name__)

DEFAULT_RETRY_DELAY = 5.0


def sign_push(fields: Mapping[str, str], client_secret: str) -> str:
    text = "&".join(f"{key}={fields[key]}" for key in sorted(fields))
    return hashlib.md5(f"{text}&client_secret={client_secret}".encode()).hexdigest()


def form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class PushRecord:
    path: str
    fields: dict[str, str]
    #: HTTP status of each attempt (0: no answer)
    attempts: list[int] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1] == 200


class Pusher:
    """Sends pushes to ``webhook_url``; one retry after ``retry_delay`` unless answered 200."""

    def __init__(
        self,
        *,
        webhook_url: str | None,
        client_id: str,
        client_secret: str,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        timeout: float = 5.0,
    ) -> None:
        self.webhook_url = webhook_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.records: list[PushRecord] = []

    def prepare(self, path: str, values: Mapping[str, Any]) -> PushRecord:
        fields = {k: form_value(v) for k, v in values.items() if v is not None}
        fields["platformCode"] = self.client_id
        fields["signature"] = sign_push(fields, self.client_secret)
        record = PushRecord(path=path, fields=fields)
        self.records.append(record)
        return record

    async def deliver(self, record: PushRecord) -> None:
        if self.webhook_url is None:
            return
        url = self.webhook_url.rstrip("/") + record.path
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            for attempt in (1, 2):
                status = 0
                try:
                    answer = await http.post(
                        url,
                        content=urlencode(record.fields),
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    )
                    status = answer.status_code
                except httpx.HTTPError as exc:
                    log.info("push to %s failed: %s", url, type(exc).__name__)
                record.attempts.append(status)
                if status == 200 or attempt == 2:
                    return
                await anyio.sleep(self.retry_delay)
