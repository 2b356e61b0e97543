"""HTTP concerns of the OKAI PaaS API: identity, signature, envelope and error parsing.

Every failure leaves this module as a :class:`~twin.adapter.VendorError`:

- an envelope code in ``success_codes``: success, ``data`` returned;
- an envelope code in ``error_codes``: that normalized code (vendor code and message kept);
- any other envelope code: ``VENDOR_ERROR`` (vendor code and message kept);
- HTTP 5xx, timeouts and connection failures: ``VENDOR_UNAVAILABLE`` (retryable);
- HTTP 429: ``RATE_LIMITED``; HTTP 401/403: ``AUTH_FAILED``; other HTTP errors or a body that is not an
  envelope: ``VENDOR_ERROR``.

Neither the userKey, the signKey nor a signature is ever logged or put into an error message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from bridges.okai.models import (
    Envelope,
    OkaiCode,
    Operate,
    ScooterLocation,
    ScooterStatus,
    SwitchLockRequest,
)
from bridges.okai.settings import OkaiSettings
from bridges.okai.signing import sign
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import make_async_client, parse_retry_after

__all__ = ["PATHS", "OkaiClient", "RedactQuery"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", ScooterStatus, ScooterLocation)

#: every endpoint the bridge calls, under the base URL
PATHS: dict[str, str] = {
    "switch_lock": "/scooter/control/switchLock",  # [doc] POST, JSON body
    "status": "/scooter/query/status",  # [code] GET, query string
    "location": "/scooter/query/location",  # [code] GET, query string
}

_SECRET_QUERY = re.compile(r"((?:^|[?&])(?:userKey|sign)=)[^&\s\"]*")


class RedactQuery(logging.Filter):
    """Masks ``userKey`` and ``sign`` in httpx's request log line (its URL carries the query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", str(arg)) if "userKey=" in str(arg) or "sign=" in str(arg) else arg
                for arg in record.args
            )
        return True


_REDACT = RedactQuery()

_SIGN_HINT = "OKAI refused the signature: check sign_key and sign_params"
_TIMESTAMP_HINT = "OKAI refused the request timestamp: check the clock and timestamp_unit"
#: what to tell an operator about a refused request, by vendor code, then by a word of the vendor message
_AUTH_HINTS_BY_CODE: dict[str, str] = {
    str(int(OkaiCode.SIGN_ERROR)): _SIGN_HINT,
    str(int(OkaiCode.TIMESTAMP_EXPIRED)): _TIMESTAMP_HINT,
    str(int(OkaiCode.USER_KEY_INVALID)): "OKAI refused the userKey: check user_key",
}
_AUTH_HINTS_BY_WORD: dict[str, str] = {"sign": _SIGN_HINT, "timestamp": _TIMESTAMP_HINT}


class OkaiClient:
    """One account's connection to the OKAI cloud. ``open()`` before use, ``aclose()`` after."""

    def __init__(
        self,
        *,
        settings: OkaiSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        if self._settings.auth_in == "params":
            logging.getLogger("httpx").addFilter(_REDACT)  # idempotent: a filter is added once
        self._http = make_async_client(
            base_url=self._settings.base_url.rstrip("/"),
            timeout=self._settings.timeout,
            transport=self._transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def switch_lock(self, imei: str, *, operate: Operate, expire_time: int) -> None:
        """Ask the scooter to lock or unlock; acceptance only (confirm from :meth:`status`)."""
        body = SwitchLockRequest(imei=imei, operate=operate, expireTime=expire_time)
        await self._call("POST", PATHS["switch_lock"], body.model_dump())

    async def status(self, imei: str) -> ScooterStatus:
        data = await self._call("GET", PATHS["status"], {"imei": imei})
        return self._parse(ScooterStatus, data, PATHS["status"])

    async def location(self, imei: str) -> ScooterLocation:
        data = await self._call("GET", PATHS["location"], {"imei": imei})
        return self._parse(ScooterLocation, data, PATHS["location"])

    # -- request building ---------------------------------------------------------------------------

    def _timestamp(self) -> str:
        now = self._clock()
        return str(int(now * 1000) if self._settings.timestamp_unit == "ms" else int(now))

    def identity(self, params: Mapping[str, object]) -> dict[str, str]:
        """``userKey``, ``timestamp`` and (when signing is on) ``sign`` for these parameters."""
        settings = self._settings
        ident = {"userKey": settings.user_key.get_secret_value(), "timestamp": self._timestamp()}
        if settings.sign_key is not None:
            ident["sign"] = sign({**params, **ident}, settings.sign_key.get_secret_value(), settings.sign_params)
        return ident

    async def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        if self._http is None:
            raise RuntimeError("OkaiClient.open() was not called")
        ident = self.identity(params)
        headers: dict[str, str] = {}
        if self._settings.auth_in == "headers":
            headers.update(ident)
        else:
            params = {**params, **ident}
        try:
            if method == "GET":
                response = await self._http.get(path, params=params, headers=headers)
            else:
                response = await self._http.post(path, json=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise VendorError(
                ErrorCode.VENDOR_UNAVAILABLE,
                f"OKAI {path} timed out",
                maybe_executed=not isinstance(exc, httpx.ConnectTimeout),  # sent, and no answer came back
            ) from exc
        except httpx.TransportError as exc:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"OKAI {path} unreachable: {type(exc).__name__}") from exc
        return self._unwrap(path, response)

    # -- answer parsing -----------------------------------------------------------------------------

    def _unwrap(self, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status >= 500:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"OKAI {path} answered HTTP {status}", vendor_code=status)
        if status == 429:
            raise VendorError(
                ErrorCode.RATE_LIMITED,
                f"OKAI {path} is rate limiting",
                vendor_code=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise VendorError(ErrorCode.AUTH_FAILED, f"OKAI {path} answered HTTP {status}", vendor_code=status)
        try:
            envelope = Envelope.model_validate_json(response.content)
        except ValidationError:
            raise VendorError(
                ErrorCode.VENDOR_ERROR, f"OKAI {path} answered HTTP {status} without an envelope"
            ) from None
        success = str(envelope.code) in {str(code) for code in self._settings.success_codes}
        if success and status < 400:
            return envelope.data
        if success:
            raise VendorError(ErrorCode.VENDOR_ERROR, f"OKAI {path} answered HTTP {status}", vendor_code=status)
        raise self._error(path, envelope)

    def _error(self, path: str, envelope: Envelope) -> VendorError:
        vendor_code = str(envelope.code)
        code = self._settings.error_codes.get(vendor_code, ErrorCode.VENDOR_ERROR)
        vendor_message = envelope.msg
        lowered = (vendor_message or "").lower()
        if code is ErrorCode.AUTH_FAILED:
            hint = _AUTH_HINTS_BY_CODE.get(vendor_code) or next(
                (text for word, text in _AUTH_HINTS_BY_WORD.items() if word in lowered), None
            )
            message = hint or f"OKAI refused the request on {path}: check user_key, sign_key and the clock"
        elif code is ErrorCode.VENDOR_ERROR:
            message = f"OKAI {path} failed with code {vendor_code}"
        else:
            message = f"OKAI {path}: {vendor_message or code.value}"
        log.debug("okai %s -> code %s", path, vendor_code)
        return VendorError(code, message, vendor_code=vendor_code, vendor_message=vendor_message)

    @staticmethod
    def _parse(model: type[_M], data: Any, path: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError:
            raise VendorError(ErrorCode.VENDOR_ERROR, f"OKAI {path} answered unexpected data") from None
