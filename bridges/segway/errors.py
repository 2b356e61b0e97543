"""Segway's 15xxx status codes, mapped once to the normalized error taxonomy.

Segway answers failures as HTTP 200 with a non-zero ``code`` in its envelope. Every code of the
document's tables is here with its meaning and whether another attempt may help; anything else
becomes ``VENDOR_ERROR``.

Exception tree: only :class:`twin.adapter.VendorError` leaves this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import ErrorCode
from twin.adapter import VendorError

__all__ = ["CODES", "TOKEN_INVALID", "VendorCode", "http_error", "vendor_error"]

#: 15101: the bearer token was refused (expired, revoked or unknown)
TOKEN_INVALID = 15101
#: how long to wait before retrying a vehicle that is installing firmware
UPGRADE_RETRY_AFTER = 30.0


@dataclass(frozen=True, kw_only=True)
class VendorCode:
    code: ErrorCode
    meaning: str
    #: None: the taxonomy's default for ``code``
    retryable: bool | None = None
    retry_after: float | None = None


CODES: dict[int, VendorCode] = {
    15101: VendorCode(code=ErrorCode.AUTH_FAILED, meaning="token verification failed"),
    15100: VendorCode(code=ErrorCode.AUTH_FAILED, meaning="incorrect platform info"),
    15004: VendorCode(code=ErrorCode.INVALID_PAYLOAD, meaning="parameter error"),
    15001: VendorCode(code=ErrorCode.VENDOR_UNAVAILABLE, meaning="server error"),
    15102: VendorCode(code=ErrorCode.UNKNOWN_DEVICE, meaning="device not found"),
    15300: VendorCode(code=ErrorCode.PERMISSION_DENIED, meaning="inactive device"),
    15301: VendorCode(code=ErrorCode.DEVICE_OFFLINE, meaning="offline device"),
    15302: VendorCode(code=ErrorCode.DEVICE_TIMEOUT, meaning="device response timeout"),
    # the cloud could not hand the command to the vehicle: nothing ran, sending again is safe
    15303: VendorCode(code=ErrorCode.DEVICE_OFFLINE, meaning="command send failed"),
    15400: VendorCode(code=ErrorCode.VENDOR_ERROR, meaning="latest location not found via device"),
    15500: VendorCode(
        code=ErrorCode.DEVICE_BUSY,
        meaning="device upgrading: command can not be executed",
        retryable=True,
        retry_after=UPGRADE_RETRY_AFTER,
    ),
    15600: VendorCode(code=ErrorCode.DEVICE_BUSY, meaning="lock failed: vehicle is riding"),
    15601: VendorCode(code=ErrorCode.VENDOR_ERROR, meaning="device lock command failed"),
    15602: VendorCode(code=ErrorCode.DEVICE_TIMEOUT, meaning="device lock failed: network error"),
    15603: VendorCode(code=ErrorCode.VENDOR_ERROR, meaning="handlebar lock failed"),
    15611: VendorCode(code=ErrorCode.VENDOR_ERROR, meaning="device unlock command failed"),
    15612: VendorCode(code=ErrorCode.DEVICE_TIMEOUT, meaning="device unlock failed: network error"),
    15635: VendorCode(code=ErrorCode.POLICY_DENIED, meaning="open failed: please operate when mopeds is unlocking"),
    15638: VendorCode(code=ErrorCode.VENDOR_ERROR, meaning="device execute failure"),
    15707: VendorCode(code=ErrorCode.UNSUPPORTED, meaning="NOT supported by this vehicle or its firmware"),
    15990: VendorCode(
        code=ErrorCode.PERMISSION_DENIED,
        meaning="API call is restricted, please contact Segway related personnel",
    ),
    15996: VendorCode(code=ErrorCode.POLICY_DENIED, meaning="device lock failed: denied by geofence strategy"),
    15997: VendorCode(code=ErrorCode.DEVICE_BUSY, meaning="device lock failed: unable to lock while riding"),
}


def vendor_error(code: int, message: str | None) -> VendorError:
    """The :class:`VendorError` for an envelope ``code`` other than 0."""
    known = CODES.get(code)
    if known is None:
        return VendorError(
            ErrorCode.VENDOR_ERROR,
            f"segway answered code {code}",
            vendor_code=code,
            vendor_message=message,
        )
    return VendorError(
        known.code,
        known.meaning,
        vendor_code=code,
        vendor_message=message,
        retryable=known.retryable,
        retry_after=known.retry_after,
    )


def http_error(status: int, *, retry_after: float | None = None) -> VendorError:
    """An HTTP status that is not Segway's 200-with-envelope."""
    if status == 429:
        return VendorError(
            ErrorCode.RATE_LIMITED, "segway is rate limiting", vendor_code=status, retry_after=retry_after
        )
    if status in (401, 403):
        return VendorError(ErrorCode.AUTH_FAILED, f"segway refused the credentials (HTTP {status})", vendor_code=status)
    if status >= 500:
        return VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"segway is unavailable (HTTP {status})", vendor_code=status)
    return VendorError(ErrorCode.VENDOR_ERROR, f"segway answered HTTP {status}", vendor_code=status)
