"""Smartcar's HTTP concerns: bearer and Basic auth, JSON bodies, error bodies -> :class:`VendorError`.

Nothing here knows about twins. Every failure leaves this module as a ``VendorError`` carrying a
normalized code, Smartcar's ``TYPE:CODE`` and description, and ``retry_after`` from the header.

Exception tree::

    VendorError                    (twin.adapter) every failed call
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import make_async_client, parse_retry_after

from .models import ErrorBody, OAuthError, TokenResponse
from .settings import SmartcarSettings

__all__ = ["ApiResponse", "SmartcarClient", "error_from_response", "parse_instant"]

log = logging.getLogger(__name__)

#: Smartcar error ``type`` -> normalized code (``VEHICLE_STATE`` is refined by its ``code``)
ERROR_TYPES: Mapping[str, ErrorCode] = {
    "AUTHENTICATION": ErrorCode.AUTH_FAILED,
    "PERMISSION": ErrorCode.PERMISSION_DENIED,
    "COMPATIBILITY": ErrorCode.UNSUPPORTED,
    "RATE_LIMIT": ErrorCode.RATE_LIMITED,
    "UPSTREAM": ErrorCode.VENDOR_UNAVAILABLE,
    "SERVER": ErrorCode.VENDOR_UNAVAILABLE,
    "VALIDATION": ErrorCode.INVALID_PAYLOAD,
    "RESOURCE_NOT_FOUND": ErrorCode.UNKNOWN_DEVICE,
    "CONNECTED_SERVICES_ACCOUNT": ErrorCode.POLICY_DENIED,
    "BILLING": ErrorCode.POLICY_DENIED,
    "VEHICLE_STATE": ErrorCode.DEVICE_BUSY,
}
VEHICLE_STATES: Mapping[str, ErrorCode] = {
    "ASLEEP": ErrorCode.VEHICLE_ASLEEP,
    "UNREACHABLE": ErrorCode.DEVICE_OFFLINE,
    "REMOTE_ACCESS_DISABLED": ErrorCode.POLICY_DENIED,
}
#: BILLING codes that say the plan's calls are spent: VEHICLE_REQUEST_LIMIT counts one vehicle's calls a month
BILLING_QUOTAS: Mapping[str, ErrorCode] = {"VEHICLE_REQUEST_LIMIT": ErrorCode.QUOTA_EXHAUSTED}
#: OAuth ``error`` values of the token endpoint that mean the account must be linked again
OAUTH_REFUSALS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "access_denied"})
#: answers about one vehicle, not the application
ONE_VEHICLE = frozenset({"RATE_LIMIT:VEHICLE", "BILLING:VEHICLE_REQUEST_LIMIT"})
#: the key of the application-wide rate limit in the Retry-After gate
APP_KEY = ""


@dataclass(frozen=True, kw_only=True)
class ApiResponse:
    """A successful answer: the JSON body and Smartcar's metadata headers."""

    body: Any
    data_age: datetime | None = None
    fetched_at: datetime | None = None
    request_id: str | None = None


def parse_instant(value: str | None) -> datetime | None:
    """An ISO-8601 header value as an aware datetime (``Z`` accepted); None when absent or malformed."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def error_from_response(response: httpx.Response) -> VendorError:
    """Translate a non-2xx answer (API or token endpoint) into a normalized error."""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "type" in payload:
        try:
            body = ErrorBody.model_validate(payload)
        except ValidationError:
            body = None
        if body is not None:
            code = ERROR_TYPES.get(body.type, ErrorCode.VENDOR_ERROR)
            if body.type == "VEHICLE_STATE" and body.code:
                code = VEHICLE_STATES.get(body.code, code)
            if body.type == "BILLING" and body.code:
                code = BILLING_QUOTAS.get(body.code, code)
            if status >= 500 and code is ErrorCode.VENDOR_ERROR:
                code = ErrorCode.VENDOR_UNAVAILABLE
            vendor_code = f"{body.type}:{body.code}" if body.code else body.type
            message = body.suggested_user_message or body.description or vendor_code
            return VendorError(
                code,
                message,
                vendor_code=vendor_code,
                vendor_message=body.description or None,
                retry_after=retry_after,
                # RATE_LIMIT:VEHICLE limits one car, as BILLING:VEHICLE_REQUEST_LIMIT spends one car's
                # plan; RATE_LIMIT:SMARTCAR_API the whole application
                vendor_wide=False if vendor_code in ONE_VEHICLE else None,
            )
    if isinstance(payload, dict) and "error" in payload:
        oauth = OAuthError.model_validate(payload)
        code = ErrorCode.AUTH_FAILED if oauth.error in OAUTH_REFUSALS else ErrorCode.VENDOR_ERROR
        if status >= 500:
            code = ErrorCode.VENDOR_UNAVAILABLE
        return VendorError(
            code,
            oauth.error_description or oauth.error,
            vendor_code=oauth.error,
            vendor_message=oauth.error_description,
        )
    if status >= 500:
        return VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"Smartcar answered HTTP {status}", vendor_code=status)
    if status == 429:
        return VendorError(ErrorCode.RATE_LIMITED, "rate limited", vendor_code=status, retry_after=retry_after)
    if status == 401:
        return VendorError(ErrorCode.AUTH_FAILED, "authentication failed", vendor_code=status)
    return VendorError(ErrorCode.VENDOR_ERROR, f"Smartcar answered HTTP {status}", vendor_code=status)


class SmartcarClient:
    """One connection pool to the Smartcar API and its token endpoint.

    A ``Retry-After`` answer closes the gate of that vehicle (or of the whole application for
    Smartcar's own limit) until it passes: calls before then fail locally with ``RATE_LIMITED`` and
    the remaining wait, without reaching Smartcar.
    """

    def __init__(self, *, settings: SmartcarSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._blocked_until: dict[str, float] = {}

    async def start(self) -> None:
        self._http = make_async_client(
            transport=self._transport,
            timeout=self._settings.request_timeout,
            headers={"User-Agent": "locktwin-smartcar/0.1"},
        )

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("SmartcarClient.start() was not called")
        return self._http

    # -- OAuth -------------------------------------------------------------------------------------

    async def exchange_code(self, code: str) -> TokenResponse:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self._settings.redirect_uri}
        return await self._token(form)

    async def refresh(self, refresh_token: str) -> TokenResponse:
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def _token(self, form: dict[str, str]) -> TokenResponse:
        auth = httpx.BasicAuth(self._settings.client_id, self._settings.client_secret.get_secret_value())
        try:
            response = await self.http.post(self._settings.auth_url, data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"token endpoint unreachable: {exc!r}") from None
        if not response.is_success:
            raise error_from_response(response)
        try:
            return TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError):
            raise VendorError(ErrorCode.VENDOR_ERROR, "malformed token response") from None

    # -- API ---------------------------------------------------------------------------------------

    def blocked_for(self, vehicle_id: str | None) -> float:
        """Seconds before a call about ``vehicle_id`` may reach Smartcar again (0: now)."""
        now = time.monotonic()
        keys = (APP_KEY,) if vehicle_id is None else (APP_KEY, vehicle_id)
        return max((self._blocked_until.get(key, now) - now for key in keys), default=0.0)

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str,
        vehicle_id: str | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> ApiResponse:
        """Call ``{base_url}{path}``; the caller's bearer ``token`` is used for nothing else."""
        wait = self.blocked_for(vehicle_id)
        if wait > 0:
            raise VendorError(
                ErrorCode.RATE_LIMITED,
                "Smartcar asked to wait before the next call",
                vendor_code="RATE_LIMIT",
                retry_after=wait,
                vendor_wide=self.blocked_for(None) > 0,  # the application's gate, not only this car's
            )
        headers = {"Authorization": f"Bearer {token}"}
        if method == "GET":
            headers["SC-Unit-System"] = self._settings.unit_system
        url = self._settings.base_url.rstrip("/") + path
        try:
            response = await self.http.request(method, url, headers=headers, json=json, params=params)
        except httpx.HTTPError as exc:
            raise VendorError(
                ErrorCode.VENDOR_UNAVAILABLE,
                f"Smartcar unreachable: {type(exc).__name__}",
                # a request that went out and got no answer may still reach the car
                maybe_executed=isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout),
            ) from None
        if not response.is_success:
            error = error_from_response(response)
            self._close_gate(vehicle_id, error)
            log.info("smartcar %s %s -> %s %s", method, path, response.status_code, error.info.vendor_code)
            raise error
        try:
            body = response.json()
        except ValueError:
            raise VendorError(ErrorCode.VENDOR_ERROR, "Smartcar answered a non-JSON body") from None
        return ApiResponse(
            body=body,
            data_age=parse_instant(response.headers.get("sc-data-age")),
            fetched_at=parse_instant(response.headers.get("sc-fetched-at")),
            request_id=response.headers.get("sc-request-id"),
        )

    def _close_gate(self, vehicle_id: str | None, error: VendorError) -> None:
        if error.info.retry_after is None:
            return
        vendor_code = error.info.vendor_code or ""
        key = vehicle_id if vehicle_id is not None and vendor_code != "RATE_LIMIT:SMARTCAR_API" else APP_KEY
        until = time.monotonic() + error.info.retry_after
        self._blocked_until[key] = max(until, self._blocked_until.get(key, 0.0))
