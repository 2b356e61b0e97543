"""The normalized error taxonomy shared by every vendor.

Each vendor translates its own failures into one :class:`ErrorCode` at its boundary; users and the
engine only ever see these codes. Whether a failure is worth retrying is a property of the code
(:data:`RETRYABLE`), which a vendor may override for one answer (``retryable`` on the error).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RETRYABLE", "ErrorCode", "ErrorInfo"]


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"
    UNSUPPORTED = "UNSUPPORTED"
    RETAINED_COMMAND = "RETAINED_COMMAND"
    EXPIRED = "EXPIRED"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    DEVICE_OFFLINE = "DEVICE_OFFLINE"
    DEVICE_TIMEOUT = "DEVICE_TIMEOUT"
    DEVICE_BUSY = "DEVICE_BUSY"
    POLICY_DENIED = "POLICY_DENIED"
    VEHICLE_ASLEEP = "VEHICLE_ASLEEP"
    RATE_LIMITED = "RATE_LIMITED"
    AUTH_FAILED = "AUTH_FAILED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    VENDOR_UNAVAILABLE = "VENDOR_UNAVAILABLE"
    VENDOR_ERROR = "VENDOR_ERROR"
    NOT_CONFIRMED = "NOT_CONFIRMED"
    #: the transaction already names another command of this device (another value, action or
    #: arguments): only the same command again is a replay
    TRANSACTION_REUSED = "TRANSACTION_REUSED"
    #: the bridge cannot write its store now (a full disk): nothing was stored, try again later
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    #: the vendor account's budget of calls (the bridge's ``budget``, or the vendor's own quota) is
    #: spent; ``retry_after`` is the time until calls go out again. Nothing was sent.
    QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"


#: Codes that are worth another attempt (with backoff, until the command expires).
RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.DEVICE_OFFLINE,
        ErrorCode.DEVICE_TIMEOUT,
        ErrorCode.VEHICLE_ASLEEP,
        ErrorCode.RATE_LIMITED,
        ErrorCode.VENDOR_UNAVAILABLE,
        ErrorCode.STORE_UNAVAILABLE,
    }
)


class ErrorInfo(BaseModel):
    """The ``error`` object of a response: a normalized code plus what the vendor said."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: ErrorCode
    message: str
    vendor_code: str | None = None
    vendor_message: str | None = None
    retryable: bool = False
    retry_after: float | None = Field(default=None, ge=0, description="seconds to wait before a retry")

    @classmethod
    def of(
        cls,
        code: ErrorCode,
        message: str,
        *,
        vendor_code: str | int | None = None,
        vendor_message: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> ErrorInfo:
        return cls(
            code=code,
            message=message,
            vendor_code=None if vendor_code is None else str(vendor_code),
            vendor_message=vendor_message,
            retryable=code in RETRYABLE if retryable is None else retryable,
            retry_after=retry_after,
        )
