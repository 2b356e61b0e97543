"""The Smartcar adapter: linked accounts' vehicles as lock twins, with telemetry on a rate budget.

State map (twin key <- Smartcar): ``lock`` <- ``/security`` ``isLocked``; ``doors_open``,
``windows_open``, ``sunroof_open``, ``storage_open``, ``charging_port_open`` <- any of that group
``OPEN``; ``battery`` (percent) and ``range_m`` <- ``/battery``; ``latitude``/``longitude`` <-
``/location``; ``odometer_m`` <- ``/odometer``. ``observed_at`` is ``SC-Data-Age``.

Rate budget: one full telemetry read (four calls) per vehicle per ``telemetry_min_interval``; only
``/security`` is read, at most every ``confirm_min_interval``, while a lock command is being
confirmed; a ``Retry-After`` from Smartcar closes the vehicle's gate in the client whatever the budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel, ConfigDict

from contracts.errors import ErrorCode
from contracts.messages import EventType
from twin.adapter import (
    ActionSpec,
    Adapter,
    BridgeSink,
    CommandContext,
    DeviceInfo,
    ExecuteResult,
    ReportedPatch,
    SimulatorKit,
    VendorError,
)

from .api import Answer, SmartcarApi
from .auth import RECONNECT_MESSAGE, TokenManager
from .client import SmartcarClient
from .link import bootstrap
from .mapping import battery_values, location_values, odometer_values, security_values
from .models import SecurityAction
from .settings import SmartcarSettings
from .tokens import StoredVehicle, TokenStore

__all__ = ["SmartcarAdapter"]

log = logging.getLogger(__name__)

#: errors that mean "this vehicle will never answer that endpoint": stop asking
NEVER_CODES = frozenset({ErrorCode.UNSUPPORTED, ErrorCode.PERMISSION_DENIED})
#: failed reads that did not reach the vehicle and so do not spend its telemetry budget
UNSPENT_CODES = frozenset({ErrorCode.AUTH_FAILED, ErrorCode.RATE_LIMITED})


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="ignore")


@dataclass
class _Vehicle:
    user_id: str
    last_full_read: float | None = None
    last_confirm_read: float | None = None
    confirm_until: float = 0.0
    confirm_target: bool | None = None
    unsupported: set[str] = field(default_factory=set)


Reader = Callable[[str, str], Awaitable[tuple[dict[str, Any], Answer[Any]]]]


class SmartcarAdapter(Adapter[SmartcarSettings]):
    vendor: ClassVar[str] = "smartcar"
    cli_commands: ClassVar[Mapping[str, str]] = {
        "connect": "link a Smartcar account (OAuth2 Connect)",
        "accounts": "list linked accounts",
    }
    settings_model: ClassVar[type[BaseModel]] = SmartcarSettings
    default_expiry: ClassVar[float] = 60.0
    max_expiry: ClassVar[float] = 600.0
    initial_in_flight: ClassVar[int] = 8

    def __init__(self, *, settings: SmartcarSettings) -> None:
        super().__init__(settings=settings)
        self._sink: BridgeSink | None = None
        self._store: TokenStore | None = None
        self._client: SmartcarClient | None = None
        self._api: SmartcarApi | None = None
        self._tokens: TokenManager | None = None
        self._vehicles: dict[str, _Vehicle] = {}
        #: devices already reported offline for a refused token (one event each until they answer)
        self._auth_reported: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, sink: BridgeSink) -> None:
        self._sink = sink
        directory = self.settings.data_dir or Path(sink.data_dir)
        self._store = TokenStore(directory=directory)
        self._store.open()
        self._client = SmartcarClient(settings=self.settings)
        await self._client.start()
        self._tokens = TokenManager(
            client=self._client,
            store=self._store,
            refresh_margin=self.settings.refresh_margin,
            on_refused=self._refused,
        )
        self._api = SmartcarApi(client=self._client, tokens=self._tokens, page_size=self.settings.page_size)
        if self.settings.auth_code is not None:
            try:
                await bootstrap(
                    self._client,
                    self._store,
                    code=self.settings.auth_code.get_secret_value(),
                    page_size=self.settings.page_size,
                )
            except VendorError as exc:
                log.warning("smartcar: the configured auth_code was not exchanged: %s", exc.info.message)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()
        if self._store is not None:
            self._store.close()

    @property
    def api(self) -> SmartcarApi:
        if self._api is None:
            raise RuntimeError("SmartcarAdapter.start() was not called")
        return self._api

    @property
    def store(self) -> TokenStore:
        if self._store is None:
            raise RuntimeError("SmartcarAdapter.start() was not called")
        return self._store

    @property
    def tokens(self) -> TokenManager:
        if self._tokens is None:
            raise RuntimeError("SmartcarAdapter.start() was not called")
        return self._tokens

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit:
        from .simulator.kit import demo_kit

        return demo_kit(devices=devices)

    @classmethod
    def cli(cls, argv: Sequence[str]) -> int:
        from .cli import main

        return main(argv)

    # -- devices -----------------------------------------------------------------------------------

    async def list_devices(self) -> Sequence[DeviceInfo]:
        """Vehicles of every linked account; a refused account keeps its last known vehicles."""
        devices: list[DeviceInfo] = []
        for account in self.store.accounts():
            known = {v.vehicle_id: v for v in self.store.vehicles(account.user_id)}
            vehicles = list(known.values())
            if not account.refused:
                try:
                    vehicles = await self._fetch_vehicles(account.user_id, known)
                except VendorError as exc:
                    # one account's trouble must not keep the other accounts' vehicles away
                    log.warning(
                        "smartcar: listing vehicles of %s failed (%s); using the last list", account.user_id, exc
                    )
            for vehicle in vehicles:
                self._vehicles.setdefault(vehicle.vehicle_id, _Vehicle(user_id=account.user_id))
                devices.append(self._device_info(vehicle))
        return devices

    async def _fetch_vehicles(self, user_id: str, known: Mapping[str, StoredVehicle]) -> list[StoredVehicle]:
        vehicles: list[StoredVehicle] = []
        for vehicle_id in await self.api.vehicle_ids(user_id):
            stored = known.get(vehicle_id)
            if stored is None:
                attributes = await self.api.attributes(user_id, vehicle_id)
                stored = StoredVehicle(
                    vehicle_id=vehicle_id,
                    user_id=user_id,
                    make=attributes.make,
                    model=attributes.model,
                    year=attributes.year,
                )
            vehicles.append(stored)
        self.store.save_vehicles(user_id, vehicles)
        return vehicles

    def _device_info(self, vehicle: StoredVehicle) -> DeviceInfo:
        model = " ".join(part for part in (vehicle.make, vehicle.model) if part) or None
        name = " ".join(str(part) for part in (vehicle.year, model) if part) or None
        capabilities = frozenset({"lock", "battery", "location", "odometer"})
        return DeviceInfo(
            id=vehicle.vehicle_id,
            name=name,
            model=model,
            capabilities=capabilities,
            poll_interval=self.settings.poll_interval,
        )

    def _vehicle(self, device_id: str) -> _Vehicle:
        vehicle = self._vehicles.get(device_id)
        if vehicle is None:
            stored = {v.vehicle_id: v for v in self.store.vehicles()}.get(device_id)
            if stored is None:
                raise VendorError(ErrorCode.UNKNOWN_DEVICE, f"no linked Smartcar vehicle {device_id}")
            vehicle = self._vehicles.setdefault(device_id, _Vehicle(user_id=stored.user_id))
        return vehicle

    async def _refused(self, user_id: str) -> None:
        """Smartcar refused the account's tokens: its vehicles go offline, asking for a reconnect."""
        for vehicle in self.store.vehicles(user_id):
            await self._auth_failed(vehicle.vehicle_id)

    async def _auth_failed(self, device_id: str) -> None:
        if self._sink is None or device_id in self._auth_reported:
            return
        # a refusal found before the runtime knew the device (at start) is reported by the next read
        if await self._sink.report(device_id, ReportedPatch(values={"online": False}), source="auth"):
            self._auth_reported.add(device_id)
            await self._sink.event(device_id, EventType.AUTH, {"code": "AUTH_FAILED", "message": RECONNECT_MESSAGE})

    # -- reads -------------------------------------------------------------------------------------

    async def read_status(self, device_id: str) -> ReportedPatch:
        try:
            patch = await self._read_status(device_id)
        except VendorError as exc:
            if exc.info.code is ErrorCode.AUTH_FAILED:
                await self._auth_failed(device_id)
            raise
        self._auth_reported.discard(device_id)
        return patch

    async def _read_status(self, device_id: str) -> ReportedPatch:
        vehicle = self._vehicle(device_id)
        now = time.monotonic()
        if now < vehicle.confirm_until:
            return await self._confirm_read(device_id, vehicle)
        if vehicle.last_full_read is not None:
            wait = vehicle.last_full_read + self.settings.telemetry_min_interval - now
            if wait > 0:
                raise VendorError(
                    ErrorCode.RATE_LIMITED,
                    "telemetry budget of this vehicle is spent",
                    vendor_code="BUDGET",
                    retry_after=round(wait, 3),
                    vendor_wide=False,  # this car's budget: the others are read as usual
                )
        previous, vehicle.last_full_read = vehicle.last_full_read, now
        try:
            return await self._full_read(device_id, vehicle)
        except VendorError as exc:
            if exc.info.code in UNSPENT_CODES:  # the car was not asked: the budget is not spent
                vehicle.last_full_read = previous
            raise

    async def _confirm_read(self, device_id: str, vehicle: _Vehicle) -> ReportedPatch:
        if vehicle.last_confirm_read is not None:
            wait = vehicle.last_confirm_read + self.settings.confirm_min_interval - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
        vehicle.last_confirm_read = time.monotonic()
        values, answer = await self._read_security(vehicle.user_id, device_id)
        if vehicle.confirm_target is not None and values.get("lock") == _lock_word(vehicle.confirm_target):
            vehicle.confirm_until = 0.0
        return ReportedPatch(values=values, observed_at=answer.meta.data_age, field_observed_at=_online_now(answer))

    async def _full_read(self, device_id: str, vehicle: _Vehicle) -> ReportedPatch:
        values, answer = await self._read_security(vehicle.user_id, device_id)
        observed = {key: answer.meta.data_age for key in values}
        readers: dict[str, Reader] = {
            "battery": self._read_battery,
            "location": self._read_location,
            "odometer": self._read_odometer,
        }
        for name, reader in readers.items():
            if name in vehicle.unsupported:
                continue
            try:
                more, extra = await reader(vehicle.user_id, device_id)
            except VendorError as exc:
                if exc.info.code is ErrorCode.AUTH_FAILED:
                    raise
                if exc.info.code in NEVER_CODES:
                    vehicle.unsupported.add(name)
                log.info("smartcar: %s of %s not read: %s", name, device_id, exc)
                if exc.info.code is ErrorCode.RATE_LIMITED:
                    break
                continue
            values.update(more)
            observed.update({key: extra.meta.data_age for key in more})
        observed.update(_online_now(answer))
        return ReportedPatch(
            values=values,
            observed_at=answer.meta.data_age,
            field_observed_at={key: at for key, at in observed.items() if at is not None},
        )

    async def _read_security(self, user_id: str, device_id: str) -> tuple[dict[str, Any], Answer[Any]]:
        answer = await self.api.security(user_id, device_id)
        return security_values(answer.value), answer

    async def _read_battery(self, user_id: str, device_id: str) -> tuple[dict[str, Any], Answer[Any]]:
        answer = await self.api.battery(user_id, device_id)
        return battery_values(answer.value, self.settings.unit_system), answer

    async def _read_location(self, user_id: str, device_id: str) -> tuple[dict[str, Any], Answer[Any]]:
        answer = await self.api.location(user_id, device_id)
        return location_values(answer.value), answer

    async def _read_odometer(self, user_id: str, device_id: str) -> tuple[dict[str, Any], Answer[Any]]:
        answer = await self.api.odometer(user_id, device_id)
        return odometer_values(answer.value, self.settings.unit_system), answer

    # -- commands ----------------------------------------------------------------------------------

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        vehicle = self._vehicle(device_id)
        action = SecurityAction.LOCK if locked else SecurityAction.UNLOCK
        answer = await self.api.set_security(vehicle.user_id, device_id, action)
        vehicle.confirm_target = locked
        vehicle.confirm_until = time.monotonic() + self.settings.confirm_window
        vehicle.last_confirm_read = None
        return ExecuteResult(data={"status": answer.status, "message": answer.message})

    def actions(self) -> Mapping[str, ActionSpec]:
        readers: dict[str, tuple[Reader, str]] = {
            "get_security": (self._read_security, "lock"),
            "get_battery": (self._read_battery, "battery"),
            "get_location": (self._read_location, "location"),
            "get_odometer": (self._read_odometer, "odometer"),
        }
        return {
            name: ActionSpec(
                name=name,
                arguments=NoArguments,
                handler=self._read_action(reader),
                description=f"read {name.removeprefix('get_')} now (outside the polling budget)",
                idempotent=True,
                capability=capability,
            )
            for name, (reader, capability) in readers.items()
        }

    def _read_action(self, reader: Reader) -> Callable[[str, Any, CommandContext], Awaitable[ExecuteResult]]:
        async def handler(device_id: str, arguments: Any, ctx: CommandContext) -> ExecuteResult:
            vehicle = self._vehicle(device_id)
            values, answer = await reader(vehicle.user_id, device_id)
            data = {key: str(value) if key == "lock" else value for key, value in values.items()}
            if answer.meta.data_age is not None:
                data["observed_at"] = answer.meta.data_age.isoformat()
            patch = ReportedPatch(
                values=values, observed_at=answer.meta.data_age, field_observed_at=_online_now(answer)
            )
            return ExecuteResult(data=data, reported=patch)

        return handler


def _online_now(answer: Answer[Any]) -> dict[str, datetime]:
    """``online`` is true when Smartcar answered, whatever the age of the data."""
    return {"online": answer.meta.fetched_at or datetime.now(UTC)}


def _lock_word(locked: bool) -> str:
    return "LOCKED" if locked else "UNLOCKED"
