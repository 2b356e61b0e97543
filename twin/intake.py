"""Validation of inbound payloads, before anything is stored or sent.

Every function here either returns a validated request or raises :class:`Rejected` with the
normalized error to answer; nothing here touches the store, the network or the vendor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts.errors import ErrorCode, ErrorInfo
from contracts.messages import TRANSACTION_PATTERN, ActionRequest, DesiredLock, SetRequest
from twin.adapter import ActionSpec, DesiredField

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_PAYLOAD_BYTES",
    "Arrival",
    "CommandRequest",
    "ParsedAction",
    "ParsedSet",
    "Rejected",
    "best_effort_transaction",
    "expiry",
    "parse_action",
    "parse_command",
    "parse_get",
    "parse_set",
]

#: Larger inbound payloads are refused without being parsed.
MAX_PAYLOAD_BYTES = 64 * 1024
#: How far in the future a sender's ``issued_at`` may be (clock skew) before it is refused.
MAX_CLOCK_SKEW = 30.0
_PLAIN = {"LOCK": DesiredLock.LOCKED, "UNLOCK": DesiredLock.UNLOCKED}
_TRANSACTION_RE = re.compile(TRANSACTION_PATTERN)
_ENVELOPE_KEYS = frozenset({"transaction", "expires_in", "issued_at", "if_version"})


class Rejected(Exception):
    def __init__(self, code: ErrorCode, message: str, *, transaction: str | None = None) -> None:
        super().__init__(message)
        self.error = ErrorInfo.of(code, message)
        self.transaction = transaction

    @classmethod
    def of(cls, error: ErrorInfo, *, transaction: str | None = None) -> Rejected:
        rejected = cls(error.code, error.message, transaction=transaction)
        rejected.error = error
        return rejected


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """What the broker's delivery of a command tells of its age, beside its payload."""

    #: it may have waited in the bridge's persistent session since then (epoch seconds; -inf: since
    #: an unknown time): it was delivered from the session's backlog after a reconnect
    queued_since: float | None = None
    #: what is left of the sender's MQTT 5 Message Expiry Interval (seconds), as the broker forwarded it
    expiry_left: float | None = None


@dataclass(frozen=True, kw_only=True)
class _Envelope:
    transaction: str | None
    expires_in: float | None
    issued_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ParsedSet(_Envelope):
    name: str
    value: Any
    if_version: int | None


@dataclass(frozen=True, kw_only=True)
class ParsedAction(_Envelope):
    arguments: BaseModel


def best_effort_transaction(payload: bytes) -> str | None:
    """The transaction of a payload we refuse, so the sender can match our answer."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    txn = doc.get("transaction") if isinstance(doc, dict) else None
    return txn if isinstance(txn, str) and _TRANSACTION_RE.match(txn) else None


def _load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, "payload is not UTF-8") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except RecursionError:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, "payload nests too deeply") from None
    except ValueError as exc:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Rejected(ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object")
    return doc


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_set(payload: bytes, fields: Mapping[str, DesiredField]) -> ParsedSet:
    plain = payload.strip()
    if plain in (b"LOCK", b"UNLOCK") and "lock" in fields:
        return ParsedSet(
            name="lock",
            value=_PLAIN[plain.decode()],
            transaction=None,
            expires_in=None,
            issued_at=None,
            if_version=None,
        )
    doc = _load_object(payload)
    txn = doc.get("transaction") if isinstance(doc.get("transaction"), str) else None
    try:
        request = SetRequest.model_validate(doc)
    except ValidationError as exc:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, _explain(exc), transaction=txn) from None
    patch: dict[str, Any] = {}
    if request.lock is not None:
        patch["lock"] = request.lock
    for key, raw in (request.model_extra or {}).items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise Rejected(
                ErrorCode.INVALID_PAYLOAD,
                f"unknown desired field {key[:64]!r} (this vendor has: {known})",
                transaction=request.transaction,
            )
        try:
            patch[key] = TypeAdapter(fields[key].type).validate_python(raw)
        except ValidationError as exc:
            raise Rejected(ErrorCode.INVALID_PAYLOAD, _explain(exc), transaction=request.transaction) from None
    if "lock" in patch and "lock" not in fields:
        raise Rejected(ErrorCode.UNSUPPORTED, "this vendor cannot lock", transaction=request.transaction)
    if len(patch) != 1:
        raise Rejected(
            ErrorCode.INVALID_PAYLOAD,
            "a /set carries exactly one desired field" if patch else "nothing to set",
            transaction=request.transaction,
        )
    [(name, value)] = patch.items()
    return ParsedSet(
        name=name,
        value=value,
        transaction=request.transaction,
        expires_in=request.expires_in,
        issued_at=request.issued_at,
        if_version=request.if_version,
    )


def parse_action(payload: bytes, spec: ActionSpec) -> ParsedAction:
    doc = _load_object(payload)
    txn = doc.get("transaction") if isinstance(doc.get("transaction"), str) else None
    try:
        envelope = ActionRequest.model_validate(doc)
        arguments = spec.arguments.model_validate({k: v for k, v in doc.items() if k not in _ENVELOPE_KEYS})
    except ValidationError as exc:
        raise Rejected(ErrorCode.INVALID_PAYLOAD, _explain(exc), transaction=txn) from None
    return ParsedAction(
        arguments=arguments,
        transaction=envelope.transaction,
        expires_in=envelope.expires_in,
        issued_at=envelope.issued_at,
    )


@dataclass(frozen=True, kw_only=True)
class CommandRequest(_Envelope):
    """A validated command, a ``/set`` or a ``/request/{action}``, ready to be accepted."""

    kind: Literal["set", "action"]
    name: str
    #: the desired value (the field's type) or the action's arguments (as JSON)
    value: Any
    if_version: int | None
    #: the device capability it needs (None: any device of the vendor)
    capability: str | None
    idempotent: bool
    #: its arguments are a secret (a key): answered once, never stored after it ended
    sensitive: bool


def parse_command(
    kind: Literal["set", "action"],
    name: str,
    payload: bytes,
    *,
    fields: Mapping[str, DesiredField],
    actions: Mapping[str, ActionSpec],
    vendor: str,
) -> CommandRequest:
    """A ``/set`` (``name`` unused) or the action ``name``'s payload, validated, or Rejected."""
    if kind == "set":
        req = parse_set(payload, fields)
        field = fields[req.name]
        return CommandRequest(
            kind="set",
            name=req.name,
            value=req.value,
            transaction=req.transaction,
            expires_in=req.expires_in,
            issued_at=req.issued_at,
            if_version=req.if_version,
            capability=field.capability,
            idempotent=field.idempotent,
            sensitive=False,
        )
    spec = actions.get(name)
    if spec is None:
        raise Rejected(
            ErrorCode.UNSUPPORTED,
            f"{vendor} has no action {name[:64]!r}",
            transaction=best_effort_transaction(payload),
        )
    action = parse_action(payload, spec)
    return CommandRequest(
        kind="action",
        name=name,
        value=action.arguments.model_dump(mode="json"),
        transaction=action.transaction,
        expires_in=action.expires_in,
        issued_at=action.issued_at,
        if_version=None,
        capability=spec.capability,
        idempotent=spec.idempotent,
        sensitive=spec.sensitive,
    )


def parse_get(payload: bytes) -> str | None:
    """The transaction of a ``/get`` (its payload is optional)."""
    doc = _load_object(payload)
    txn = doc.get("transaction")
    if txn is None:
        return None
    if not isinstance(txn, str) or not _TRANSACTION_RE.match(txn):
        raise Rejected(ErrorCode.INVALID_PAYLOAD, "transaction must be 1-128 printable ASCII characters")
    return txn


def expiry(
    *,
    expires_in: float | None,
    issued_at: datetime | None,
    default: float,
    maximum: float,
    now: float,
    queued_since: float | None = None,
    expiry_left: float | None = None,
) -> float:
    """When a command expires (epoch seconds), or Rejected when it already has or cannot be trusted.

    The command's lifetime is ``expires_in`` (else ``default``), at most ``maximum``, counted from:

    - ``issued_at`` when the sender gave one (refused more than :data:`MAX_CLOCK_SKEW` ahead of our
      clock); a sender's clock running ahead never makes a command live longer than its lifetime
      after it arrived;
    - else ``queued_since`` when the message may have waited in the broker for us: it was delivered
      from our persistent session's backlog, which may hold it since the bridge was last seen live.
      Its age is unknown, so it is counted from the earliest moment it could have been published;
    - else its arrival (``now``): it was delivered live.

    ``expiry_left`` (an MQTT 5 Message Expiry Interval, as the broker forwarded it: what is left of
    it) shortens the lifetime further: the sender said the message is void after that.
    """
    lifetime = min(expires_in if expires_in is not None else default, maximum)
    if issued_at is not None:
        try:
            issued = issued_at.astimezone(UTC).timestamp()
        except (OverflowError, ValueError, OSError):
            raise Rejected(ErrorCode.INVALID_PAYLOAD, "issued_at is out of range") from None
        if issued > now + MAX_CLOCK_SKEW:
            raise Rejected(ErrorCode.INVALID_PAYLOAD, "issued_at is in the future")
        if issued + lifetime <= now:
            raise Rejected(ErrorCode.EXPIRED, "the command expired before it arrived")
        expires_at = min(issued, now) + lifetime
    elif queued_since is not None:
        waited = now - queued_since
        if queued_since + lifetime <= now:
            raise Rejected(
                ErrorCode.EXPIRED,
                f"its age is unknown (no issued_at): it waited in the broker while the bridge was away, "
                f"for up to {_seconds(waited)}, longer than its expiry of {_seconds(lifetime)}; "
                "send issued_at with commands",
            )
        expires_at = queued_since + lifetime
    else:
        expires_at = now + lifetime
    if expiry_left is not None:
        if expiry_left <= 0:
            raise Rejected(ErrorCode.EXPIRED, "its MQTT message expiry interval had run out")
        expires_at = min(expires_at, now + expiry_left)
    return expires_at


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value < 1e9 else "an unknown time"
