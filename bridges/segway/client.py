"""HTTP concerns of the Segway Discovery API: token, bearer, envelope and errors.

One :class:`SegwayClient` per bridge. The OAuth2 client-credentials token is fetched on first use
and refreshed ahead of ``expires_in`` (Segway keeps the old token valid for 300 s after a new one is
issued, so calls in flight during a refresh still pass). However many calls are waiting, one refresh
runs at a time (:class:`twin.http.TokenRefresher`). A ``15101`` (token refused) refreshes once and
repeats the call once.

Every failure leaves as :class:`twin.adapter.VendorError`; no httpx exception escapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
from twin.http import Token, TokenRefresher, make_async_client, parse_retry_after

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
    """Typed calls of the Segway API. ``start()`` opens the HTTP client, ``stop()`` closes it.

    ``transport``: the HTTP transport (a test's), ``clock``: the token's clock (monotonic seconds).
    """

    def __init__(
        self,
        *,
        settings: SegwaySettings,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._clock = clock
        self._tokens = self._token_refresher()
        #: how many tokens were fetched (for operators and tests)
        self.token_fetches = 0

    def _token_refresher(self) -> TokenRefresher[str]:
        # Segway keeps the old token valid for 300 s after issuing a new one: calls go on with it
        return TokenRefresher(fetch=self._fetch_token, vendor="segway", overlap=True, clock=self._clock)

    async def start(self) -> None:
        self._tokens = self._token_refresher()  # a started client fetches its own token
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

    async def __aenter__(self) -> SegwayClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- token --------------------------------------------------------------------------------

    async def _fetch_token(self, _: Token[str] | None) -> Token[str]:
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        started = self._clock()
        response = await self._send("POST", PATHS["token"], data=form)
        if response.status_code != 200:
            raise _token_error(response)
        try:
            answer = TokenResponse.model_validate_json(response.content)
        except ValidationError:
            raise VendorError(ErrorCode.VENDOR_ERROR, "segway sent an unreadable token answer") from None
        self.token_fetches += 1
        log.info("segway token obtained, valid %.0f s", answer.expires_in)
        return Token.lasting(
            answer.access_token, lifetime=answer.expires_in, ahead=self.settings.token_refresh_ahead, since=started
        )

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
        refused: str | None = None
        for attempt in (1, 2):
            token = await self._tokens.get(refused=refused)
            response = await self._send(method, path, token=token, params=params, json=json)
            if response.status_code != 200:
                raise http_error(
                    response.status_code, retry_after=parse_retry_after(response.headers.get("Retry-After"))
                )
            try:
                envelope = Envelope.model_validate_json(response.content)
            except ValidationError:
                raise VendorError(ErrorCode.VENDOR_ERROR, f"segway sent no envelope for {path}") from None
            if envelope.code == 0:
                return envelope.data
            if envelope.code == TOKEN_INVALID and attempt == 1:
                log.info("segway refused the token; refreshing once")
                refused = token
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
    return http_error(response.status_code, retry_after=parse_retry_after(response.headers.get("Retry-After")))
