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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from bridges.tuya.errors import TOKEN_INVALID_CODES, vendor_error
from bridges.tuya.models import Envelope, TokenResult
from bridges.tuya.signing import sign
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import Token, TokenRefresher, make_async_client

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_TOKEN_REFRESH_MARGIN", "PATHS", "TuyaClient"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
DEFAULT_TOKEN_REFRESH_MARGIN = 60.0
_SL = "/v1.0/smart-lock/devices/{device_id}"
_DV = "/v1.0/devices/{device_id}"
_CARDS = "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"
_CARD_QUERY = "/v1.0/cloud/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"

#: every endpoint the bridge calls, as path templates (the actions' under their action's name)
PATHS: dict[str, str] = {
    # tokens
    "token": "/v1.0/token",
    "refresh": "/v1.0/token/{refresh_token}",
    # the lock
    "device": _DV,
    "password_ticket": _SL + "/password-ticket",
    "door_operate": _SL + "/password-free/door-operate",
    "remote_unlocks": _DV + "/door-lock/remote-unlocks",
    # cards (tuya-doorlock-card-api)
    "cards": _CARDS,
    "card_query": _CARD_QUERY,
    # users (tuya-smart-lock-user-api)
    "list_users": "/v1.1/devices/{device_id}/users",
    "list_users_v1": _DV + "/users",
    "list_lock_users": _SL + "/users",
    "get_user": "/v1.1/devices/{device_id}/users/{user_id}",
    "get_user_v1": _DV + "/users/{user_id}",
    "add_user": _DV + "/user",
    "update_user": _DV + "/users/{user_id}",
    "delete_user": _DV + "/users/{user_id}",
    "delete_users_issue": _SL + "/users/{user_ids}/actions/delete-users-issue",
    "set_user_role": _SL + "/users/{user_id}/actions/role",
    "set_user_schedule": _SL + "/users/{user_id}/schedule",
    "list_unlock_methods": _SL + "/opmodes/{user_id}",
    "list_absent_users": _DV + "/door-lock/absent-users",
    "allocate_unlock_method": _DV + "/door-lock/opmodes/actions/allocate",
    "allocate_unlock_method_by_number": _DV + "/device-lock/users/{user_id}/allocate",
    "cancel_unlock_allocation": _SL + "/opmodes/actions/cancel-allocate",
    "list_user_devices": "/v1.0/smart-lock/users/{uid}/devices",
    # lock records
    "list_remote_unlocks": _DV + "/door-lock/remote-unlocks",
    "list_open_logs": _DV + "/door-lock/open-logs",
    # card actions
    "issue_card": _CARDS,
    "get_card": _CARD_QUERY + "/{lock_card_id}",
    "modify_card": _CARDS + "/{lock_card_id}",
    "freeze_card": _CARDS + "/{lock_card_id}/freeze-status",
    "delete_card": _CARDS + "/{lock_card_id}",
}
TOKEN_PATH = PATHS["token"]
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
class _Credentials:
    access_token: str
    refresh_token: str = field(repr=False)
    uid: str


class TuyaClient:
    """Signed, token-managed calls to one Tuya Cloud data center. Use ``async with``.

    ``transport``: the HTTP transport (a test's); ``clock``: the token's clock (monotonic seconds).
    """

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
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._secret = secret
        self._timeout = timeout
        self._margin = token_refresh_margin
        self._send_nonce = send_nonce
        self._lang = lang
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        # a refresh ends the old access token at once (no overlap): callers wait for the new one
        self._tokens = TokenRefresher[_Credentials](fetch=self._renew, vendor="tuya", clock=clock)
        #: how many tokens were obtained by grant and by refresh (for operators and tests)
        self.grants = 0
        self.refreshes = 0

    async def __aenter__(self) -> TuyaClient:
        httpx_log = logging.getLogger("httpx")
        if _REDACT not in httpx_log.filters:
            httpx_log.addFilter(_REDACT)
        self._http = make_async_client(base_url=self._base_url, timeout=self._timeout, transport=self._transport)
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
        token = await self._tokens.get()
        envelope = await self._send(method, path, params=params, body=body, access_token=token.access_token)
        if not envelope.success and envelope.code in TOKEN_INVALID_CODES:
            log.info("tuya token refused (code %s); renewing once", envelope.code)
            token = await self._tokens.get(refused=token)
            envelope = await self._send(method, path, params=params, body=body, access_token=token.access_token)
        return _result(envelope)

    # -- tokens ------------------------------------------------------------------------------

    @property
    def uid(self) -> str | None:
        held = self._tokens.held
        return None if held is None else held.value.uid

    async def _renew(self, current: Token[_Credentials] | None) -> Token[_Credentials]:
        """Refresh with the one-time refresh token of ``current``, or (none, or refused) grant."""
        if current is not None:
            try:
                token = await self._fetch_token(PATHS["refresh"].format(refresh_token=current.value.refresh_token))
            except VendorError as exc:
                log.info("tuya token refresh refused (%s); new grant", exc.info.vendor_code)
            else:
                self.refreshes += 1
                return token
        token = await self._fetch_token(PATHS["token"], {"grant_type": 1})
        self.grants += 1
        return token

    async def _fetch_token(self, path: str, params: Mapping[str, Any] | None = None) -> Token[_Credentials]:
        started = self._tokens.clock()
        envelope = await self._send("GET", path, params=params, body=None, access_token="")
        try:
            result = TokenResult.model_validate(_result(envelope))
        except ValidationError as exc:
            raise VendorError(ErrorCode.VENDOR_ERROR, "tuya token answer malformed") from exc
        credentials = _Credentials(access_token=result.access_token, refresh_token=result.refresh_token, uid=result.uid)
        return Token.lasting(credentials, lifetime=float(result.expire_time), ahead=self._margin, since=started)

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
