"""The Tuya door-lock adapter: devices from configuration, state from data points, commands.

- state: the device's data points, mapped by :mod:`bridges.tuya.mapping`;
- ``lock``: a password ticket, then the password-free door-operate (``open`` true unlocks, false
  locks). ``result: true`` is acceptance only; the runtime confirms from ``lock_motor_state``,
  whose polarity is configurable per device.
- ``cards``: desired door-lock cards, reconciled by :mod:`bridges.tuya.cards` (masked ids only).
- ``/request/{action}``: every user and card endpoint, from the table in :mod:`bridges.tuya.actions`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel

from bridges.tuya.actions import ENDPOINTS, Endpoint
from bridges.tuya.arguments import WireArguments
from bridges.tuya.card_sync import CardSync
from bridges.tuya.cards import CARDS_TYPE, CardOperation, ManagedCards, cards_confirmed, parse_cards, redact_cards
from bridges.tuya.client import PATHS, TuyaClient
from bridges.tuya.mapping import door_operate_body, remote_unlock_enabled, status_values
from bridges.tuya.models import DeviceDetail, PasswordTicket
from bridges.tuya.settings import TuyaSettings
from contracts.errors import ErrorCode
from contracts.messages import EventType
from twin.adapter import (
    LOCK_FIELD,
    ActionSpec,
    Adapter,
    BridgeSink,
    CommandContext,
    DesiredField,
    DeviceInfo,
    ExecuteResult,
    PlannedOperation,
    ReportedPatch,
    SimulatorKit,
    VendorError,
)

__all__ = ["TuyaAdapter"]

log = logging.getLogger(__name__)


class TuyaAdapter(Adapter[TuyaSettings]):
    vendor: ClassVar[str] = "tuya"
    settings_model: ClassVar[type[BaseModel]] = TuyaSettings
    confirm_interval: ClassVar[float] = 0.5

    def __init__(self, *, settings: TuyaSettings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings=settings)
        #: the access token's clock (monotonic seconds; tests move their own)
        self._clock = clock
        self._client: TuyaClient | None = None
        self._cards: CardSync | None = None
        self._sink: BridgeSink | None = None
        #: devices whose remote-unlocks list remoteUnlockWithoutPwd as open (checked once)
        self._remote_ok: set[str] = set()
        #: the last alarm seen per device, so a new one is announced once as an ALERT event
        self._alarms: dict[str, str | None] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, sink: BridgeSink) -> None:
        s = self.settings
        self._sink = sink
        store = None
        if s.project_id:
            store = ManagedCards(path=sink.data_dir / "cards.json")
            store.load()
        client = TuyaClient(
            base_url=s.base_url,
            client_id=s.client_id,
            secret=s.secret(),
            timeout=s.timeout,
            token_refresh_margin=s.token_refresh_margin,
            send_nonce=s.send_nonce,
            lang=s.lang,
            clock=self._clock,
        )
        self._client = await client.__aenter__()
        if s.project_id and store is not None:
            self._cards = CardSync(client=client, project_id=s.project_id, store=store)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> TuyaClient:
        if self._client is None:
            raise RuntimeError("TuyaAdapter used before start()")
        return self._client

    # -- devices and state ---------------------------------------------------------------------

    async def list_devices(self) -> Sequence[DeviceInfo]:
        capabilities = frozenset({"lock", "users"} | ({"cards"} if self.settings.project_id else set()))
        return [
            DeviceInfo(id=device_id, capabilities=capabilities, poll_interval=self.settings.poll_interval)
            for device_id in self.settings.devices
        ]

    async def read_status(self, device_id: str) -> ReportedPatch:
        detail = DeviceDetail.model_validate(await self.client.get(PATHS["device"].format(device_id=device_id)))
        values = self.map_status(device_id, detail)
        alarm = values["last_alarm"]
        if alarm != self._alarms.get(device_id):
            self._alarms[device_id] = alarm
            if alarm is not None and self._sink is not None:
                await self._sink.event(device_id, EventType.ALERT, {"alarm": alarm})
        if self._cards is not None:
            try:
                values["cards"] = self._cards.view(device_id, await self._cards.read(device_id))
            except VendorError as exc:
                log.info("tuya cards of %s not read: %s", device_id, exc.info.code)
        return ReportedPatch(values=values, observed_at=datetime.now(UTC))

    def map_status(self, device_id: str, detail: DeviceDetail) -> dict[str, Any]:
        """The twin's keys from one device's data points (:func:`bridges.tuya.mapping.status_values`)."""
        return status_values(detail, locked_when_true=self.settings.locked_when_true(device_id))

    @classmethod
    def simulator(cls, *, devices: int) -> SimulatorKit:
        """The simulated Tuya data center with ``devices`` door locks and its demo-only credentials."""
        from bridges.tuya.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PROJECT_ID, TuyaSimulator

        sim = TuyaSimulator(devices=devices)
        ids = list(sim.fleet.locks)

        def settings(base_url: str) -> dict[str, Any]:
            return {
                "base_url": base_url,
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "project_id": DEFAULT_PROJECT_ID,
                "devices": ids,
                "poll_interval": 30.0,
            }

        return SimulatorKit(app=sim.app, settings=settings, device_ids=ids, limits=sim.limits)

    # -- desired state -------------------------------------------------------------------------

    def desired_fields(self) -> Mapping[str, DesiredField]:
        fields = {"lock": LOCK_FIELD}
        if self.settings.project_id:
            fields["cards"] = DesiredField(
                name="cards",
                type=CARDS_TYPE,
                capability="cards",
                confirmed=cards_confirmed,
                plan=self._plan_cards,
                redact=redact_cards,
            )
        return fields

    async def _plan_cards(self, device_id: str, value: Any, ctx: CommandContext) -> list[PlannedOperation]:
        """Each card issued, changed, frozen or deleted is a command of its own (the engine runs them)."""
        if self._cards is None:
            raise VendorError(ErrorCode.UNSUPPORTED, "cards need the cloud project_id in the settings")
        cards = self._cards
        issued: dict[str, str] = {}

        def step(op: CardOperation) -> PlannedOperation:
            async def run(_: CommandContext) -> ExecuteResult:
                await cards.execute(device_id, op, issued)
                return ExecuteResult(data=op.describe())

            return PlannedOperation(name=op.kind, label=op.masked, run=run)

        return [step(op) for op in await cards.plan(device_id, parse_cards(value))]

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        await self._check_remote_unlock(device_id)
        ticket = PasswordTicket.model_validate(
            await self.client.post(PATHS["password_ticket"].format(device_id=device_id))
        )
        accepted = await self.client.post(
            PATHS["door_operate"].format(device_id=device_id), door_operate_body(ticket.ticket_id, locked=locked)
        )
        if accepted is not True:
            raise VendorError(ErrorCode.VENDOR_ERROR, "the cloud did not accept the door operation", retryable=True)
        return ExecuteResult(data={"accepted": True})

    async def _check_remote_unlock(self, device_id: str) -> None:
        if device_id in self._remote_ok:
            return
        raw = await self.client.get(PATHS["remote_unlocks"].format(device_id=device_id))
        if not remote_unlock_enabled(raw):
            raise VendorError(
                ErrorCode.UNSUPPORTED, "remote unlock without password is not enabled on this lock", retryable=False
            )
        self._remote_ok.add(device_id)

    # -- actions -------------------------------------------------------------------------------

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            e.name: ActionSpec(
                name=e.name,
                arguments=e.arguments,
                handler=functools.partial(self._run_endpoint, e),
                description=e.description,
                idempotent=e.idempotent,
                sensitive=e.sensitive,
                capability=e.capability,
                **({} if e.redact is None else {"redact": e.redact}),
            )
            for e in ENDPOINTS
            if e.capability != "cards" or self.settings.project_id
        }

    async def _run_endpoint(
        self, endpoint: Endpoint, device_id: str, arguments: Any, ctx: CommandContext
    ) -> ExecuteResult:
        args: WireArguments = arguments
        path = endpoint.path.format(
            device_id=device_id, project_id=self.settings.project_id or "", **args.path_values()
        )
        result = await self.client.request(endpoint.method, path, params=args.query(), body=args.body())
        return ExecuteResult(data=result if isinstance(result, dict) else {"result": result})
