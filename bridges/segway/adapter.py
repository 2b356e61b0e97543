"""The Segway Discovery adapter: vehicles from configuration, state from status + location,
lock/unlock as the desired ``lock``, every other control and setting as a ``/request`` action.

Confirmation of a lock comes from the status ``locked`` field, by push or poll. The bluetooth key
is only ever an action's answer (sensitive): it never enters a reported patch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel

from bridges.segway.actions import (
    AmbientLightArgs,
    BluetoothKeyArgs,
    EnableSwitchesArgs,
    LocationArgs,
    NoArgs,
    SoundArgs,
    SwitchesArgs,
    UploadIntervalArgs,
)
from bridges.segway.client import SegwayClient
from bridges.segway.intake import PushIntake
from bridges.segway.mapping import location_patch, merge, status_patch
from bridges.segway.models import SoundControlRequest, VehicleLocation, VehicleStatus
from bridges.segway.push import PushStats
from bridges.segway.settings import SegwaySettings
from contracts.errors import ErrorCode
from twin.adapter import (
    ActionHandler,
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
from twin.asgi import ServedApp
from twin.extensions import Extension

__all__ = ["SegwayAdapter"]

log = logging.getLogger(__name__)

MODEL = "Segway C80"
CAPABILITIES = frozenset({"lock", "location", "battery", "find", "settings", "bluetooth_key"})
#: "find my vehicle" on the sound endpoint
FIND_CONTROL_TYPE = 2


class SegwayAdapter(Adapter[SegwaySettings]):
    vendor = "segway"
    cli_commands: ClassVar[Mapping[str, str]] = {
        "check": "prove credentials, region and vehicles",
        "sign": "the push signature of key=value fields",
    }
    settings_model = SegwaySettings
    default_expiry = 30.0
    max_expiry = 300.0
    secret_fields = frozenset({"bluetooth_key", "key"})

    def __init__(self, *, settings: SegwaySettings) -> None:
        super().__init__(settings=settings)
        self._client: SegwayClient | None = None
        self._sink: BridgeSink | None = None
        #: the webhooks, served while the bridge runs (an extension; None when push is off)
        self.push = PushIntake(settings=settings) if settings.push_enabled else None

    @property
    def client(self) -> SegwayClient:
        if self._client is None:
            raise RuntimeError("SegwayAdapter.start() was not called")
        return self._client

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit:
        """The simulated Segway cloud with ``devices`` vehicles and demo-only credentials."""
        from bridges.segway.simulator import DEMO_CLIENT_SECRET, SegwaySimulator

        secret = DEMO_CLIENT_SECRET
        sim = SegwaySimulator(client_secret=secret, devices=devices)

        def settings(base_url: str) -> dict[str, Any]:
            return {
                "client_id": sim.client_id,
                "client_secret": secret,
                "base_url": base_url,
                "devices": sim.fleet.ids,
                "poll_interval": 30.0,
            }

        return SimulatorKit(app=sim.app, settings=settings, device_ids=sim.fleet.ids, limits=sim.limits)

    @classmethod
    def cli(cls, argv: Sequence[str]) -> int:
        from bridges.segway.cli import main

        return main(argv)

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self, sink: BridgeSink) -> None:
        client = SegwayClient(settings=self.settings)
        await client.start()
        self._client = client
        self._sink = sink

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._sink = None
        if client is not None:
            await client.stop()

    def extensions(self) -> Sequence[Extension]:
        return () if self.push is None else (self.push,)

    @property
    def push_address(self) -> ServedApp | None:
        """Where the push intake listens while the bridge runs."""
        return None if self.push is None else self.push.address

    @property
    def push_stats(self) -> PushStats:
        return PushStats() if self.push is None else self.push.stats

    # ---- devices and state ----------------------------------------------------------------------

    async def list_devices(self) -> Sequence[DeviceInfo]:
        config = self.settings
        return [
            DeviceInfo(id=iot_code, model=MODEL, capabilities=CAPABILITIES, poll_interval=config.poll_interval)
            for iot_code in config.devices
        ]

    def _known(self, device_id: str) -> str:
        if device_id not in self.settings.devices:
            raise VendorError(ErrorCode.UNKNOWN_DEVICE, f"{device_id} is not configured for segway")
        return device_id

    async def read_status(self, device_id: str) -> ReportedPatch:
        """Status and last known position, read together; an offline vehicle reads ``online: false``.

        A failed position read leaves the status alone; a failed status read raises (plainly, not
        wrapped in an exception group, so the engine sees the VendorError and its ``retryable``).
        """
        iot_code = self._known(device_id)
        status: VehicleStatus | None = None
        location: VehicleLocation | None = None
        failure: VendorError | None = None

        async def read_status() -> None:
            nonlocal status, failure
            try:
                status = await self.client.status(iot_code)
            except VendorError as exc:
                failure = exc

        async def read_location() -> None:
            nonlocal location
            try:
                location = await self.client.location(iot_code, realtime=self.settings.realtime_location)
            except VendorError as exc:
                log.debug("segway location of %s unavailable: %s", iot_code, exc.info.code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_status)
            if self.settings.poll_location:
                tg.start_soon(read_location)
        if failure is not None:
            if failure.info.code == ErrorCode.DEVICE_OFFLINE:
                return ReportedPatch(values={"online": False})
            raise failure
        assert status is not None
        return merge(status_patch(status), None if location is None else location_patch(location))

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        iot_code = self._known(device_id)
        if locked:
            await self.client.lock(iot_code)
        else:
            await self.client.unlock(iot_code)
        return ExecuteResult()

    # ---- actions --------------------------------------------------------------------------------

    async def _open_battery_cover(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        await self.client.open_battery_cover(self._known(device_id))
        return ExecuteResult(data={"opened": True})

    async def _find(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        iot_code = self._known(device_id)
        await self.client.sound(SoundControlRequest(iot_code=iot_code, control_type=FIND_CONTROL_TYPE))
        return ExecuteResult(data={"sounding": True})

    async def _set_switches(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, SwitchesArgs)
        await self.client.switch_setting(args.request(self._known(device_id)))
        return ExecuteResult(data=args.model_dump(exclude_none=True))

    async def _enable_switches(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, EnableSwitchesArgs)
        await self.client.switch_enable(args.request(self._known(device_id)))
        return ExecuteResult(data=args.model_dump(exclude_none=True))

    async def _set_ambient_light(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, AmbientLightArgs)
        await self.client.ambient_light(args.request(self._known(device_id)))
        return ExecuteResult(data=args.model_dump(exclude_none=True))

    async def _set_sound(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, SoundArgs)
        await self.client.sound_setting(args.request(self._known(device_id)))
        return ExecuteResult(data=args.model_dump(exclude_none=True))

    async def _set_bluetooth_key(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, BluetoothKeyArgs)
        await self.client.set_bluetooth_key(args.request(self._known(device_id)))
        return ExecuteResult(data={"changed": True})

    async def _get_bluetooth_key(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        answer = await self.client.get_bluetooth_key(self._known(device_id))
        return ExecuteResult(data={"key": answer.key})

    async def _set_upload_interval(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, UploadIntervalArgs)
        await self.client.upload_interval(args.request(self._known(device_id)))
        return ExecuteResult(data=args.model_dump())

    async def _get_battery(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        info = await self.client.battery_info(self._known(device_id))
        values: dict[str, Any] = {}
        if info.vehicle_percent is not None:
            values["battery"] = max(0.0, min(100.0, info.vehicle_percent))
        if info.charging is not None:
            values["charging"] = info.charging
        data = info.model_dump(exclude={"iot_code"}, exclude_none=True)
        if info.iot_voltage is not None:
            data["iot_voltage"] = info.iot_voltage / 100  # 411 -> 4.11 V
        patch = ReportedPatch(values=values) if values else None
        return ExecuteResult(data=data, reported=patch)  # the engine merges what a read action learned

    async def _get_location(self, device_id: str, args: Any, ctx: CommandContext) -> ExecuteResult:
        assert isinstance(args, LocationArgs)
        location = await self.client.location(self._known(device_id), realtime=args.realtime)
        patch = location_patch(location)
        if patch is None:
            return ExecuteResult(data={"fix": False})
        data: dict[str, Any] = {"fix": True, **patch.values}
        if patch.observed_at is not None:
            data["observed_at"] = patch.observed_at.isoformat()
        return ExecuteResult(data=data, reported=patch)

    def actions(self) -> Mapping[str, ActionSpec]:
        specs = [
            _spec("open_battery_cover", NoArgs, self._open_battery_cover, "open the battery cover (unlocked)"),
            _spec("find", NoArgs, self._find, "sound the vehicle so it can be found"),
            _spec("set_switches", SwitchesArgs, self._set_switches, "alert sensitivity 1-3, low power 10-30 %"),
            _spec("enable_switches", EnableSwitchesArgs, self._enable_switches, "assisted mode, kickstand..."),
            _spec("set_ambient_light", AmbientLightArgs, self._set_ambient_light, "atmosphere lamp"),
            _spec("set_sound", SoundArgs, self._set_sound, "sounds on/off, volume 1-3, per-sound mask"),
            _spec("set_bluetooth_key", BluetoothKeyArgs, self._set_bluetooth_key, "8 letters/digits", sensitive=True),
            _spec("get_bluetooth_key", NoArgs, self._get_bluetooth_key, "the IoT's bluetooth key", sensitive=True),
            _spec("set_upload_interval", UploadIntervalArgs, self._set_upload_interval, "seconds, 10-65535"),
            _spec("get_battery", NoArgs, self._get_battery, "battery packs, voltages, IoT battery"),
            _spec("get_location", LocationArgs, self._get_location, "position (a fresh fix by default)"),
        ]
        return {spec.name: spec for spec in specs}


def _spec(
    name: str, arguments: type[BaseModel], handler: ActionHandler, description: str, *, sensitive: bool = False
) -> ActionSpec:
    # every Segway action may be sent twice without harm (settings, a sound, an open cover, reads)
    return ActionSpec(
        name=name,
        arguments=arguments,
        handler=handler,
        description=description,
        idempotent=True,
        sensitive=sensitive,
    )
