"""The Smartcar endpoints the bridge uses, as typed calls on behalf of one linked user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from contracts.errors import ErrorCode
from twin.adapter import VendorError

from .auth import TokenManager
from .client import ApiResponse, SmartcarClient
from .models import (
    ActionResponse,
    Attributes,
    Battery,
    Location,
    Odometer,
    SecurityAction,
    SecurityRequest,
    SecurityStatus,
    User,
    VehicleList,
)

__all__ = ["Answer", "SmartcarApi"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class Answer(Generic[M]):
    """A parsed body with the response's metadata (``data_age`` from ``SC-Data-Age``)."""

    value: M
    meta: ApiResponse


class SmartcarApi:
    def __init__(self, *, client: SmartcarClient, tokens: TokenManager, page_size: int = 50) -> None:
        self._client = client
        self._tokens = tokens
        self._page_size = page_size

    async def _call(
        self,
        user_id: str,
        method: str,
        path: str,
        model: type[M],
        *,
        vehicle_id: str | None = None,
        json: object = None,
        params: dict[str, str | int] | None = None,
    ) -> Answer[M]:
        token = await self._tokens.access_token(user_id)
        try:
            meta = await self._client.request(
                method, path, token=token, vehicle_id=vehicle_id, json=json, params=params
            )
        except VendorError as exc:
            if exc.info.code is not ErrorCode.AUTH_FAILED:
                raise
            # the access token was refused before its time: one refresh, one more try
            token = await self._tokens.access_token(user_id, stale=token)
            try:
                meta = await self._client.request(
                    method, path, token=token, vehicle_id=vehicle_id, json=json, params=params
                )
            except VendorError as again:
                if again.info.code is ErrorCode.AUTH_FAILED:
                    raise await self._tokens.refused(user_id, "access token", again) from None
                raise
        try:
            return Answer(value=model.model_validate(meta.body), meta=meta)
        except ValidationError as exc:
            raise VendorError(
                ErrorCode.VENDOR_ERROR, f"unexpected Smartcar answer on {path}: {exc.error_count()} errors"
            ) from None

    async def user(self, user_id: str) -> User:
        return (await self._call(user_id, "GET", "/user", User)).value

    async def vehicle_ids(self, user_id: str) -> list[str]:
        """Every vehicle of the user, page after page."""
        ids: list[str] = []
        while True:
            params: dict[str, str | int] = {"limit": self._page_size, "offset": len(ids)}
            page = (await self._call(user_id, "GET", "/vehicles", VehicleList, params=params)).value
            ids.extend(page.vehicles)
            if not page.vehicles or len(page.vehicles) < self._page_size or len(ids) >= page.paging.count:
                return ids

    async def attributes(self, user_id: str, vehicle_id: str) -> Attributes:
        return (await self._call(user_id, "GET", f"/vehicles/{vehicle_id}/", Attributes, vehicle_id=vehicle_id)).value

    async def security(self, user_id: str, vehicle_id: str) -> Answer[SecurityStatus]:
        return await self._call(
            user_id, "GET", f"/vehicles/{vehicle_id}/security", SecurityStatus, vehicle_id=vehicle_id
        )

    async def set_security(self, user_id: str, vehicle_id: str, action: SecurityAction) -> ActionResponse:
        body = SecurityRequest(action=action).model_dump(mode="json")
        path = f"/vehicles/{vehicle_id}/security"
        return (await self._call(user_id, "POST", path, ActionResponse, vehicle_id=vehicle_id, json=body)).value

    async def battery(self, user_id: str, vehicle_id: str) -> Answer[Battery]:
        return await self._call(user_id, "GET", f"/vehicles/{vehicle_id}/battery", Battery, vehicle_id=vehicle_id)

    async def location(self, user_id: str, vehicle_id: str) -> Answer[Location]:
        return await self._call(user_id, "GET", f"/vehicles/{vehicle_id}/location", Location, vehicle_id=vehicle_id)

    async def odometer(self, user_id: str, vehicle_id: str) -> Answer[Odometer]:
        return await self._call(user_id, "GET", f"/vehicles/{vehicle_id}/odometer", Odometer, vehicle_id=vehicle_id)
