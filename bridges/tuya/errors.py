"""Tuya's error codes and their place in the normalized taxonomy.

Tuya answers every failure with HTTP 200 and ``{"success": false, "code": N, "msg": "..."}``; this
table turns ``N`` into an :class:`~contracts.errors.ErrorCode`. Codes not in the table are
``VENDOR_ERROR``. Transport failures (no answer, a non-200 status) are ``VENDOR_UNAVAILABLE``.
"""

from __future__ import annotations

from types import MappingProxyType

from contracts.errors import ErrorCode
from twin.adapter import VendorError

__all__ = [
    "DATA_NOT_EXIST",
    "ERROR_CODES",
    "RATE_LIMIT_CODES",
    "TOKEN_INVALID_CODES",
    "vendor_error",
]

#: the access token expired or is unknown: refresh once and retry
TOKEN_INVALID_CODES = frozenset({1010, 1011})
RATE_LIMIT_CODES = frozenset({1110, 1111, 1199})
DATA_NOT_EXIST = 1000

ERROR_CODES: MappingProxyType[int, ErrorCode] = MappingProxyType(
    {
        500: ErrorCode.VENDOR_UNAVAILABLE,  # system error
        DATA_NOT_EXIST: ErrorCode.VENDOR_ERROR,  # data not exist
        1001: ErrorCode.AUTH_FAILED,  # secret invalid
        1002: ErrorCode.AUTH_FAILED,  # access_token is null
        1003: ErrorCode.AUTH_FAILED,  # grant type invalid
        1004: ErrorCode.AUTH_FAILED,  # sign invalid
        1005: ErrorCode.AUTH_FAILED,  # client id invalid
        1010: ErrorCode.AUTH_FAILED,  # token expired
        1011: ErrorCode.AUTH_FAILED,  # token invalid
        1012: ErrorCode.AUTH_FAILED,  # status invalid (refresh token used or unknown)
        1013: ErrorCode.AUTH_FAILED,  # request time invalid (clock skew)
        1100: ErrorCode.INVALID_PAYLOAD,  # param is empty
        1101: ErrorCode.INVALID_PAYLOAD,  # param is illegal
        1102: ErrorCode.INVALID_PAYLOAD,  # param is illegal
        1106: ErrorCode.PERMISSION_DENIED,  # permission deny
        1108: ErrorCode.UNSUPPORTED,  # uri path invalid
        1109: ErrorCode.INVALID_PAYLOAD,  # param is illegal
        1110: ErrorCode.RATE_LIMITED,  # too many requests
        1111: ErrorCode.RATE_LIMITED,  # too many requests
        1199: ErrorCode.RATE_LIMITED,  # too many requests
        2001: ErrorCode.DEVICE_OFFLINE,  # device is offline
        2002: ErrorCode.UNKNOWN_DEVICE,  # user has no such device
        2003: ErrorCode.UNSUPPORTED,  # function not supported
        2004: ErrorCode.UNSUPPORTED,  # not supported by this lock
        2006: ErrorCode.INVALID_PAYLOAD,  # user does not exist
        2008: ErrorCode.UNSUPPORTED,  # command or value not supported
        2009: ErrorCode.UNSUPPORTED,  # device not supported
        2010: ErrorCode.UNKNOWN_DEVICE,  # device does not exist
        28841105: ErrorCode.PERMISSION_DENIED,  # project not authorized for this API
        28841004: ErrorCode.QUOTA_EXHAUSTED,  # the project's call quota (a trial's resource pack) is used up
    }
)


def vendor_error(code: int, msg: str) -> VendorError:
    """The :class:`VendorError` of one Tuya failure envelope."""
    normalized = ERROR_CODES.get(code, ErrorCode.VENDOR_ERROR)
    return VendorError(normalized, f"tuya error {code}: {msg}", vendor_code=code, vendor_message=msg)
