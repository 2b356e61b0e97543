"""Tuya Cloud request signing (HMAC-SHA256, the algorithm of projects created since 2021).

Computed exactly as the official ``tuya-connector-python`` SDK does, and verified the same way by the
simulator::

    string_to_sign = METHOD "\\n" sha256hex(body) "\\n" "" "\\n" path[?k=v&k=v sorted by key, not encoded]
    sign = HMAC-SHA256(secret, client_id + access_token + t + nonce + string_to_sign).hex().upper()

``access_token`` is empty on token calls, ``nonce`` is optional (empty when absent), ``t`` is the
13-digit time in milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

__all__ = ["EMPTY_BODY_SHA256", "canonical_path", "content_sha256", "sign", "string_to_sign"]

EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def content_sha256(body: bytes | None) -> str:
    """Lower-case hex SHA-256 of the raw body bytes (of ``b""`` when there is no body)."""
    return hashlib.sha256(body or b"").hexdigest()


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        # the SDK formats with f"{value}", so Python's True/False; keep that
        return str(value)
    return f"{value}"


def canonical_path(path: str, params: Mapping[str, Any] | None = None) -> str:
    """``path`` plus ``?k=v&...`` with keys sorted, values as text, nothing URL-encoded."""
    if not params:
        return path
    query = "&".join(f"{key}={_param_text(params[key])}" for key in sorted(params))
    return f"{path}?{query}"


def string_to_sign(method: str, path: str, params: Mapping[str, Any] | None, body: bytes | None) -> str:
    return "\n".join([method.upper(), content_sha256(body), "", canonical_path(path, params)])


def sign(
    *,
    client_id: str,
    secret: str,
    t: str,
    method: str,
    path: str,
    params: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    access_token: str = "",
    nonce: str = "",
) -> str:
    """The ``sign`` header of one request."""
    message = client_id + access_token + t + nonce + string_to_sign(method, path, params, body)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()
