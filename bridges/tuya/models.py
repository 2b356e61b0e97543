"""Typed models of the Tuya Cloud wire format (responses and request bodies).

Response models ignore unknown keys (the cloud adds fields over time); request bodies are built
from these models and serialized with ``exclude_none``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REMOTE_WITHOUT_PASSWORD",
    "CardInfo",
    "CardOperateResult",
    "DeviceDetail",
    "Envelope",
    "PasswordTicket",
    "RemoteUnlock",
    "StatusItem",
    "TokenResult",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Envelope(_Wire):
    """Every answer: ``success``, then ``result`` or ``code``/``msg``; ``t`` in ms, ``tid`` trace id."""

    success: bool
    result: Any = None
    code: int | None = None
    msg: str | None = None
    t: int | None = None
    tid: str | None = None


class TokenResult(_Wire):
    """``GET /v1.0/token?grant_type=1`` and ``GET /v1.0/token/{refresh_token}``."""

    uid: str = ""
    access_token: str
    expire_time: int = Field(gt=0, description="seconds")
    refresh_token: str


class StatusItem(_Wire):
    code: str
    value: Any = None


class DeviceDetail(_Wire):
    """``GET /v1.0/devices/{device_id}``: the device with its online flag and data points."""

    id: str
    name: str | None = None
    model: str | None = None
    product_name: str | None = None
    category: str | None = None
    online: bool = False
    status: list[StatusItem] = Field(default_factory=list)
    update_time: int | None = None


class PasswordTicket(_Wire):
    """``POST /v1.0/smart-lock/devices/{device_id}/password-ticket``."""

    ticket_id: str
    ticket_key: str | None = None
    expire_time: int | None = None


class CardInfo(_Wire):
    """The card query answer; ``begin_time``/``end_time`` are 13-digit ms timestamps.

    ``freeze_status`` is not in the document's answer; it is read when a cloud sends it.
    """

    lock_card_id: str
    begin_time: int | None = None
    end_time: int | None = None
    freeze_status: int | None = None


class CardOperateResult(_Wire):
    """Answer of the issue, modify, freeze-status and delete card operations."""

    operate_id: str | None = None
    operate_result: bool = False
    lock_card_id: str | None = None


REMOTE_WITHOUT_PASSWORD = "remoteUnlockWithoutPwd"  # noqa: S105 - a capability name


class RemoteUnlock(_Wire):
    """One entry of ``GET /v1.0/devices/{device_id}/door-lock/remote-unlocks``."""

    remote_unlock_type: str
    open: bool = False
