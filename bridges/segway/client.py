"""HTTP concerns of the Segway Discovery API: token, bearer, envelope and errors.

One :class:`SegwayClient` per bridge. The OAuth2 client-credentials token is fetched on first use
and refreshed ahead of ``expires_in`` (Segway keeps the old token valid for 300 s after a new one is
issued, so calls in flight during a refresh still pass). However many calls are waiting, one refresh
runs at a time. A ``15101`` (token refused) refreshes once and repeats the call once.

Every failure leaves as :class:`twin.adapter.VendorError`; no httpx exception escapes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from bridges.segway.errors import TOKEN_INVALID, http_error, vendor_error
from bridges.segway.models import (
    AmbientLightRequest,
    BatteryInfo,
    BluetoothKey,
    BluetoothKeyRequest,
    Envelope,
    IotRequest,
    SoundControlRequest,
    SoundSettingRequest,
    SwitchEnableRequest,
    SwitchSettingRequest,
    TokenResponse,
    UploadIntervalRequest,
    VehicleLocation,
    VehicleStatus,
)
from bridges.segway.settings import SegwaySettings
from contracts.errors import ErrorCode
from twin.adapter import VendorError
from twin.http import make_async_client
from twin.metrics import TOKEN_REFRESHES

__all__ = ["PATHS", "SegwayClient"]

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

#: every endpoint of the document
PATHS: dict[str, str] = {
    "token": "/oauth/token",
    "status": "/api/v2/vehicle/query/current/status",
    "location": "/api/v2/vehicle/query/current/location",
    "battery_info": "/api/v2/mopeds/query/current/battery-info",
    "get_bluetooth_key": "/api/v2/vehicle/query/current/bluetooth-key",
    "unlock": "/api/v2/vehicle/control/unlock",
    "lock": "/api/v2/vehicle/control/lock",
    "battery_cover": "/api/v2/vehicle/control/battery-cover",
    "sound": "/api/v2/vehicle/control/sound",
    "switch_setting": "/api/v2/mopeds/setting/switch",
    "switch_enable": "/api/v2/mopeds/setting/able-switch",
    "ambient_light": "/api/v2/vehicle/setting/ambient",
    "sound_setting": "/api/v2/vehicle/setting/sound",
    "set_bluetooth_key": "/api/v2/vehicle/setting/bluetooth-key",
    "upload_interval": "/api/v2/vehicle/setting/interval",
}


class SegwayClient:
    """Typed calls of the Segway API. ``start()`` opens the HTTP client, ``stop()`` closes it."""

    def __init__(self, *, settings: SegwaySettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._token_lock: anyio.Lock | None = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._fetch_attempts = 0
        self._fetch_error: VendorError | None = None
        #: how many tokens were fetched (for operators and tests)
        self.token_fetches = 0

    async def start(self) -> None:
        self._token_lock = anyio.Lock()
        self._http = make_async_client(
            backend=self.settings.http_transport,
            base_url=self.settings.api_base_url,
            timeout=self.settings.request_timeout,
            transport=self._transport,
            headers={"Accept": "application/json"},
        )

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._token = None

    async def __aenter__(self) -> SegwayClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- token --------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        token = self._token
        now = time.monotonic()
        if token is not None and now < self._refresh_at:
            return token
        if self._token_lock is None:
            raise RuntimeError("SegwayClient.start() was not called")
        if token is not None and now < self._expires_at and self._token_lock.locked():
            return token  # a refresh is under way; the old token stays valid meanwhile (overlap)
        attempt = self._fetch_attempts
        async with self._token_lock:
            token = self._token
            if token is not None and time.monotonic() < self._refresh_at:
                return token  # refreshed by the call we waited for
            if self._fetch_attempts != attempt and self._fetch_error is not None:
                raise _again(self._fetch_error)  # the refresh we waited for failed: no stampede
            self._fetch_attempts += 1
            try:
                token = await self._fetch_token()
            except VendorError as exc:
                self._fetch_error = exc
                TOKEN_REFRESHES.labels(vendor="segway", outcome="failed").inc()
                raise
            self._fetch_error = None
            TOKEN_REFRESHES.labels(vendor="segway", outcome="ok").inc()
            return token

    async def _fetch_token(self) -> str:
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        started = time.monotonic()
        response = await self._send("POST", PATHS["token"], data=form)
        if response.status_code != 200:
            raise _token_error(response)
        try:
            answer = TokenResponse.model_validate_json(response.content)
        except ValidationError:
            raise VendorError(ErrorCode.VENDOR_ERROR, "segway sent an unreadable token answer") from None
        ahead = min(self.settings.token_refresh_ahead, answer.expires_in / 2)
        self._token = answer.access_token
        self._expires_at = started + answer.expires_in
        self._refresh_at = self._expires_at - ahead
        self.token_fetches += 1
        log.info("segway token obtained, valid %.0f s", answer.expires_in)
        return answer.access_token

    def _forget(self, token: str) -> None:
        """The cloud refused ``token``: the next call fetches a new one (unless one already did)."""
        if self._token == token:
            self._refresh_at = self._expires_at = 0.0

    # ---- transport ----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        if self._http is None:
            raise RuntimeError("SegwayClient.start() was not called")
        headers = {"Authorization": f"bearer {token}"} if token is not None else None
        try:
            return await self._http.request(method, path, params=params, json=json, data=data, headers=headers)
        except httpx.TimeoutException as exc:
            raise VendorError(
                ErrorCode.VENDOR_UNAVAILABLE,
                f"segway did not answer {path} in time",
                maybe_executed=not isinstance(exc, httpx.ConnectTimeout),  # sent, and no answer came back
            ) from None
        except httpx.HTTPError as exc:
            raise VendorError(ErrorCode.VENDOR_UNAVAILABLE, f"cannot reach segway: {type(exc).__name__}") from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """One API call; returns the envelope's ``data`` or raises VendorError."""
        for attempt in (1, 2):
            token = await self._access_token()
            response = await self._send(method, path, token=token, params=params, json=json)
            if response.status_code != 200:
                raise http_error(response.status_code, retry_after=_retry_after(response))
            try:
                envelope = Envelope.model_validate_json(response.content)
            except ValidationError:
                raise VendorError(ErrorCode.VENDOR_ERROR, f"segway sent no envelope for {path}") from None
            if envelope.code == 0:
                return envelope.data
            if envelope.code == TOKEN_INVALID and attempt == 1:
                log.info("segway refused the token; refreshing once")
                self._forget(token)
                continue
            raise vendor_error(envelope.code, envelope.msg)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, path: str, model: type[_M], params: dict[str, Any]) -> _M:
        data = await self._call("GET", path, params=params)
        try:
            return model.model_validate(data)
        except ValidationError:
            raise VendorError(ErrorCode.VENDOR_ERROR, f"segway sent unreadable data for {path}") from None

    async def _control(self, path: str, request: BaseModel) -> None:
        await self._call("POST", path, json=request.model_dump(by_alias=True, exclude_none=True))

    # ---- queries ------------------------------------------------------------------------------

    async def status(self, iot_code: str) -> VehicleStatus:
        return await self._read(PATHS["status"], VehicleStatus, {"iotCode": iot_code})

    async def location(self, iot_code: str, *, realtime: bool = False) -> VehicleLocation:
        params: dict[str, Any] = {"iotCode": iot_code}
        if realtime:
            params["realTimeLocation"] = "true"
        return await self._read(PATHS["location"], VehicleLocation, params)

    async def battery_info(self, iot_code: str) -> BatteryInfo:
        return await self._read(PATHS["battery_info"], BatteryInfo, {"iotCode": iot_code})

    async def get_bluetooth_key(self, iot_code: str) -> BluetoothKey:
        return await self._read(PATHS["get_bluetooth_key"], BluetoothKey, {"iotCode": iot_code})

    # ---- controls -----------------------------------------------------------------------------

    async def lock(self, iot_code: str) -> None:
        await self._control(PATHS["lock"], IotRequest(iot_code=iot_code))

    async def unlock(self, iot_code: str) -> None:
        await self._control(PATHS["unlock"], IotRequest(iot_code=iot_code))

    async def open_battery_cover(self, iot_code: str) -> None:
        await self._control(PATHS["battery_cover"], IotRequest(iot_code=iot_code))

    async def sound(self, request: SoundControlRequest) -> None:
        await self._control(PATHS["sound"], request)

    # ---- settings -----------------------------------------------------------------------------

    async def switch_setting(self, request: SwitchSettingRequest) -> None:
        await self._control(PATHS["switch_setting"], request)

    async def switch_enable(self, request: SwitchEnableRequest) -> None:
        await self._control(PATHS["switch_enable"], request)

    async def ambient_light(self, request: AmbientLightRequest) -> None:
        await self._control(PATHS["ambient_light"], request)

    async def sound_setting(self, request: SoundSettingRequest) -> None:
        await self._control(PATHS["sound_setting"], request)

    async def set_bluetooth_key(self, request: BluetoothKeyRequest) -> None:
        await self._control(PATHS["set_bluetooth_key"], request)

    async def upload_interval(self, request: UploadIntervalRequest) -> None:
        await self._control(PATHS["upload_interval"], request)


def _again(error: VendorError) -> VendorError:
    """A fresh exception with the same answer (one instance is not raised in several tasks)."""
    info = error.info
    return VendorError(
        info.code,
        info.message,
        vendor_code=info.vendor_code,
        vendor_message=info.vendor_message,
        retryable=info.retryable,
        retry_after=info.retry_after,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _token_error(response: httpx.Response) -> VendorError:
    if response.status_code in (400, 401, 403):
        try:
            body = response.json()
        except ValueError:
            body = {}
        reason = body.get("error") if isinstance(body, dict) else None
        return VendorError(
            ErrorCode.AUTH_FAILED,
            "segway refused the client credentials",
            vendor_code=str(reason) if reason else response.status_code,
            vendor_message=str(body.get("error_description")) if isinstance(body, dict) else None,
        )
    return http_error(response.status_code, retry_after=_retry_after(response))
