"""The Tuya Cloud HTTP client: signing, tokens, the envelope and error parsing.

Everything vendor-specific about HTTP lives here; the adapter only calls :meth:`TuyaClient.request`
with a path and gets a ``result`` back or a :class:`~twin.adapter.VendorError`.

Transport failures: no connection is ``VENDOR_UNAVAILABLE``, an answer that does not come in time
is ``DEVICE_TIMEOUT`` (both retryable).

Tokens: ``GET /v1.0/token?grant_type=1`` gives an access token and a one-time refresh token. The
client refreshes (``GET /v1.0/token/{refresh_token}``) before expiry, one refresh at a time; when a
call answers 1010/1011 it renews once and retries the call once. A refused refresh falls back to a
new grant.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from pydantic import SecretStr, ValidationError

from bridges.tuya.errors import TOKEN_INVALID_CODES, vendor_error
from bridges.tuya.models import Envelope, TokenResult
from bridges.tuya.signing import sign
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import make_async_client
from twin.metrics import TOKEN_REFRESHES

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_TOKEN_REFRESH_MARGIN", "TuyaClient"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
DEFAULT_TOKEN_REFRESH_MARGIN = 60.0
TOKEN_PATH = "/v1.0/token"  # noqa: S105 - a path, not a secret


_REFRESH_PATH = re.compile(r"/v1\.0/token/[^?\s\"']+")


class _RedactRefreshToken(logging.Filter):
    """httpx logs every URL at INFO; a refresh token travels in the path, so hide it there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(TOKEN_PATH + "/" in str(arg) for arg in record.args):
            record.args = tuple(
                _REFRESH_PATH.sub(TOKEN_PATH + "/***", str(arg)) if TOKEN_PATH + "/" in str(arg) else arg
                for arg in record.args
            )
        return True


_REDACT = _RedactRefreshToken()


@dataclass(frozen=True)
class _Token:
    access_token: str
    refresh_token: str
    uid: str
    #: time.monotonic() after which the token is refreshed before use
    refresh_at: float


class TuyaClient:
    """Signed, token-managed calls to one Tuya Cloud data center. Use ``async with``."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        secret: SecretStr,
        timeout: float = DEFAULT_TIMEOUT,
        token_refresh_margin: float = DEFAULT_TOKEN_REFRESH_MARGIN,
        send_nonce: bool = False,
        lang: str = "en",
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._secret = secret
        self._timeout = timeout
        self._margin = token_refresh_margin
        self._send_nonce = send_nonce
        self._lang = lang
        self._http: httpx.AsyncClient | None = None
        self._token: _Token | None = None
        self._token_lock: anyio.Lock | None = None
        #: how many tokens were obtained by grant and by refresh (for operators and tests)
        self.grants = 0
        self.refreshes = 0

    async def __aenter__(self) -> TuyaClient:
        httpx_log = logging.getLogger("httpx")
        if _REDACT not in httpx_log.filters:
            httpx_log.addFilter(_REDACT)
        self._http = make_async_client(base_url=self._base_url, timeout=self._timeout)
        self._token_lock = anyio.Lock()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- public calls ------------------------------------------------------------------------

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self.request("POST", path, body=body)

    async def put(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, params=params)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One business call; returns the envelope's ``result`` or raises :class:`VendorError`."""
        token = await self._valid_token()
        envelope = await self._send(method, path, params=params, body=body, access_token=token.access_token)
        if not envelope.success and envelope.code in TOKEN_INVALID_CODES:
            log.info("tuya token refused (code %s); renewing once", envelope.code)
            token = await self._renew(stale=token)
            envelope = await self._send(method, path, params=params, body=body, access_token=token.access_token)
        return _result(envelope)

    # -- tokens ------------------------------------------------------------------------------

    @property
    def uid(self) -> str | None:
        return None if self._token is None else self._token.uid

    async def _valid_token(self) -> _Token:
        token = self._token
        if token is not None and time.monotonic() < token.refresh_at:
            return token
        return await self._renew(stale=token)

    async def _renew(self, *, stale: _Token | None) -> _Token:
        """Refresh (or grant) unless another task already replaced ``stale``; one at a time."""
        assert self._token_lock is not None, "TuyaClient used outside 'async with'"
        async with self._token_lock:
            current = self._token
            if current is not None and current is not stale and time.monotonic() < current.refresh_at:
                return current
            if current is not None:
                try:
                    self._token = await self._fetch_token(f"{TOKEN_PATH}/{current.refresh_token}", None)
                    self.refreshes += 1
                    TOKEN_REFRESHES.labels(vendor="tuya", outcome="ok").inc()
                    return self._token
                except VendorError as exc:
                    TOKEN_REFRESHES.labels(vendor="tuya", outcome="failed").inc()
                    log.info("tuya token refresh refused (%s); new grant", exc.info.vendor_code)
            self._token = None
            self._token = await self._fetch_token(TOKEN_PATH, {"grant_type": 1})
            self.grants += 1
            return self._token

    async def _fetch_token(self, path: str, params: Mapping[str, Any] | None) -> _Token:
        started = time.monotonic()
        envelope = await self._send("GET", path, params=params, body=None, access_token="")
        try:
            result = TokenResult.model_validate(_result(envelope))
        except ValidationError as exc:
            raise VendorError(ErrorCode.VENDOR_ERROR, "tuya token answer malformed") from exc
        lifetime = float(result.expire_time)
        ahead = min(self._margin, lifetime / 2)
        return _Token(
            access_token=result.access_token,
            refresh_token=result.refresh_token,
            uid=result.uid,
            refresh_at=started + lifetime - ahead,
        )

    # -- wire --------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        body: Mapping[str, Any] | None,
        access_token: str,
    ) -> Envelope:
        if self._http is None:
            raise RuntimeError("TuyaClient used outside 'async with'")
        content = json.dumps(body).encode() if body else None
        t = str(int(time.time() * 1000))
        nonce = uuid.uuid4().hex if self._send_nonce else ""
        headers = {
            "client_id": self._client_id,
            "sign": sign(
                client_id=self._client_id,
                secret=self._secret.get_secret_value(),
                t=t,
                method=method,
                path=path,
                params=params,
                body=content,
                access_token=access_token,
                nonce=nonce,
            ),
            "sign_method": "HMAC-SHA256",
            "t": t,
            "access_token": access_token,
            "lang": self._lang,
        }
        if nonce:
            headers["nonce"] = nonce
        if content is not None:
            headers["Content-Type"] = "application/json"
        query = {key: _query_text(value) for key, value in (params or {}).items()}
        try:
            response = await self._http.request(method, path, params=query, content=content, headers=headers)
        except httpx.ReadTimeout as exc:
            # the cloud took the call and did not answer in time: usually a slow device behind it
            raise VendorError(
                ErrorCode.DEVICE_TIMEOUT, "tuya cloud did not answer in time", maybe_executed=True
            ) from exc
        except httpx.TimeoutException as exc:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"tuya cloud timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"tuya cloud unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            code = ErrorCode.VENDOR_UNAVAILABLE if response.status_code >= 500 else ErrorCode.VENDOR_ERROR
            raise VendorError(code, f"tuya cloud answered HTTP {response.status_code}")
        try:
            return Envelope.model_validate_json(response.content)
        except ValidationError as exc:
            raise VendorError(ErrorCode.VENDOR_ERROR, "tuya cloud answer is not an envelope") from exc


def _query_text(value: Any) -> str:
    # must equal the text the signature covers (signing.canonical_path)
    return str(value)


def _result(envelope: Envelope) -> Any:
    if envelope.success:
        return envelope.result
    raise vendor_error(envelope.code if envelope.code is not None else -1, envelope.msg or "")
