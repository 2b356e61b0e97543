"""The OKAI adapter: scooters (by IMEI) <-> twins.

Devices come from configuration; state is a status read, mapped by :mod:`bridges.okai.mapping`
(the state map is there). ``lock()`` only sends ``switchLock`` with ``expireTime`` = the command's
remaining lifetime; the runtime confirms it from status reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridges.okai.client import OkaiClient
from bridges.okai.mapping import answer_data, location_patch, offline_patch, status_patch, switch_lock_arguments
from bridges.okai.settings import OkaiSettings
from contracts.errors import ErrorCode
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

__all__ = ["OkaiAdapter"]

MODEL = "OKAI scooter"
CAPABILITIES = frozenset({"lock", "location", "battery"})


class NoArguments(BaseModel):
    """Actions of this vendor take no arguments (envelope keys are ignored)."""

    model_config = ConfigDict(extra="ignore")


class OkaiAdapter(Adapter[OkaiSettings]):
    vendor: ClassVar[str] = "okai"
    settings_model: ClassVar[type[BaseModel]] = OkaiSettings
    #: expireTime is whole seconds (at least 1): with less than 1 s left it would outlive the command
    send_margin: ClassVar[float] = 1.0

    def __init__(self, *, settings: OkaiSettings) -> None:
        super().__init__(settings=settings)
        self._client: OkaiClient | None = None
        self._sink: BridgeSink | None = None

    @property
    def client(self) -> OkaiClient:
        if self._client is None:
            raise RuntimeError("OkaiAdapter.start() was not called")
        return self._client

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit:
        """The simulated OKAI cloud with ``devices`` scooters and demo-only keys (signing on)."""
        from bridges.okai.simulator import DEMO_SIGN_KEY, DEMO_USER_KEY, OkaiSimulator

        user_key, sign_key = DEMO_USER_KEY, DEMO_SIGN_KEY
        sim = OkaiSimulator(user_key=user_key, sign_key=sign_key, devices=devices, record_calls=False)

        def settings(base_url: str) -> dict[str, Any]:
            return {
                "user_key": user_key,
                "sign_key": sign_key,
                "base_url": base_url.rstrip("/") + sim.base_path,
                "devices": sim.fleet.imeis,
                "poll_interval": 30.0,
            }

        return SimulatorKit(app=sim.app, settings=settings, device_ids=sim.fleet.imeis, limits=sim.limits)

    async def start(self, sink: BridgeSink) -> None:
        client = OkaiClient(settings=self.settings)
        await client.open()
        self._client = client
        self._sink = sink

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def list_devices(self) -> Sequence[DeviceInfo]:
        interval = self.settings.poll_interval
        return [
            DeviceInfo(id=imei, model=MODEL, capabilities=CAPABILITIES, poll_interval=interval)
            for imei in self.settings.devices
        ]

    def _imei(self, device_id: str) -> str:
        if device_id not in self.settings.devices:
            raise VendorError(ErrorCode.UNKNOWN_DEVICE, f"{device_id} is not a configured OKAI scooter")
        return device_id

    async def read_status(self, device_id: str) -> ReportedPatch:
        imei = self._imei(device_id)
        try:
            status = await self.client.status(imei)
        except VendorError as exc:
            if exc.info.code is ErrorCode.DEVICE_OFFLINE:
                return offline_patch()
            raise
        return status_patch(status, self.settings)

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        imei = self._imei(device_id)
        operate, expire_time = switch_lock_arguments(locked=locked, remaining=ctx.remaining)
        try:
            await self.client.switch_lock(imei, operate=operate, expire_time=expire_time)
        except VendorError as exc:
            if exc.info.code is ErrorCode.DEVICE_OFFLINE and self._sink is not None:
                # the vendor says so: publish availability now, the runtime retries the command
                await self._sink.report(device_id, offline_patch(), source="command")
            raise
        return ExecuteResult()

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            "get_status": ActionSpec(
                name="get_status",
                arguments=NoArguments,
                handler=self._get_status,
                description="read the scooter's status now (lock, battery, position, speed, distances)",
                idempotent=True,
            ),
            "get_location": ActionSpec(
                name="get_location",
                arguments=NoArguments,
                handler=self._get_location,
                description="read the scooter's position now",
                idempotent=True,
            ),
        }

    async def _get_status(self, device_id: str, arguments: Any, ctx: CommandContext) -> ExecuteResult:
        patch = status_patch(await self.client.status(self._imei(device_id)), self.settings)
        return ExecuteResult(data=answer_data(patch), reported=patch)

    async def _get_location(self, device_id: str, arguments: Any, ctx: CommandContext) -> ExecuteResult:
        patch = location_patch(await self.client.location(self._imei(device_id)))
        return ExecuteResult(data=answer_data(patch), reported=patch if patch.values else None)
