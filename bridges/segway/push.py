"""Push intake: the four webhooks Segway calls (alert, fault, location, status), form-encoded.

Each push is checked against its signature (the document's recipe: MD5 over the sorted ``k=v``
pairs of every received field but the signature, joined by ``&``, with ``&client_secret=<secret>``
appended); a wrong or missing signature answers 401 and changes nothing. A valid push is stored
through the sink and answered ``200 {"code": 0}`` only after the sink returned, so Segway's single
retry (after 5 s) covers a crash in between. Unknown devices are counted and ignored, ``0.0/0.0``
and ``invalid`` positions dropped, bodies over ``push_max_body`` refused with 413.

A signature proves who made a push, not when it was sent: a captured push stays valid. So a push
must carry its timestamp (400 without one), one dated more than ``push_window`` before it arrived is
answered 200 and changes nothing, and one already stored is answered 200 and changes nothing
(:mod:`bridges.segway.replay`, which remembers them across restarts). Copies of one push that
arrive together are stored once: the later ones wait for the first's outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import anyio
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridges.segway.mapping import alert_event, fault_event, location_patch, status_patch
from bridges.segway.models import AlertPush, FaultPush, LocationPush, StatusPush, from_vendor_time
from bridges.segway.replay import PushLedger, Verdict
from bridges.segway.settings import SegwaySettings
from contracts.messages import EventType
from twin.adapter import BridgeSink
from twin.http_guard import ClientLimits
from twin.metrics import PUSHES

__all__ = [
    "PUSH_PATHS",
    "PushStats",
    "create_push_app",
    "open_push_ledger",
    "push_client_limits",
    "push_signature",
    "verify_push",
]

log = logging.getLogger(__name__)

PUSH_PATHS = ("/v2/vehicle/alert", "/v2/vehicle/fault", "/v2/vehicle/location", "/v2/vehicle/status")
#: the document's location page spells the field ``signatrue``
_SIGNATURE_KEYS = ("signature", "signatrue")
_FORM = "application/x-www-form-urlencoded"
#: the wire field that dates a push -> the models' attribute (``gpsUTCTime`` is accepted too)
_DATE_ATTRIBUTES = {"statusUtcTime": "status_utc_time", "gpsUtcTime": "gps_utc_time"}


@dataclass
class PushStats:
    """What the intake did with the pushes it received (also ``locktwin_pushes_total{outcome}``)."""

    received: int = 0
    stored: int = 0
    bad_signature: int = 0
    invalid: int = 0
    unknown_device: int = 0
    dropped_position: int = 0
    too_large: int = 0
    #: without the timestamp that dates it (400)
    undated: int = 0
    #: dated more than ``push_window`` before it arrived (200, nothing changed)
    stale: int = 0
    #: a copy of a push already stored (200, nothing changed)
    replayed: int = 0
    #: connections cut off by twin.http_guard: head or body too slow, too many from one client,
    #: waiting for a request while the intake was full; requests refused while it was busy (503)
    slow_header: int = 0
    slow_body: int = 0
    client_cap: int = 0
    evicted: int = 0
    busy: int = 0

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome != "received":
            PUSHES.labels(vendor="segway", outcome=outcome).inc()


def push_signature(fields: Mapping[str, str], client_secret: str) -> str:
    """The document's signature of ``fields`` (which must not contain the signature itself)."""
    text = "&".join(f"{key}={fields[key]}" for key in sorted(fields))
    return hashlib.md5(f"{text}&client_secret={client_secret}".encode()).hexdigest()


def _signature_of(fields: Mapping[str, str]) -> str | None:
    signature = next((fields[k] for k in _SIGNATURE_KEYS if k in fields), None)
    return signature.strip().lower() if signature else None


def verify_push(fields: Mapping[str, str], client_secret: str) -> bool:
    signature = _signature_of(fields)
    if not signature:
        return False
    signed = {k: v for k, v in fields.items() if k not in _SIGNATURE_KEYS}
    expected = push_signature(signed, client_secret).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _signed(body: bytes, decoded: Mapping[str, str], client_secret: str) -> bool:
    """The document splits the received string on ``&`` and ``=`` (values as sent, still
    percent-encoded); frameworks that hand over a decoded dict sign decoded values. Both are the
    recipe; either signature is accepted."""
    if verify_push(decoded, client_secret):
        return True
    raw = dict(pair.partition("=")[::2] for pair in body.decode("ascii", "replace").split("&") if pair)
    return raw != decoded and verify_push(raw, client_secret)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _ok(message: str = "success") -> JSONResponse:
    return JSONResponse({"code": 0, "message": message})


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


#: True: stored; False: the sink does not know the device; None: nothing to store (dropped)
Handler = Callable[[BaseModel], Awaitable[bool | None]]


def push_client_limits(settings: SegwaySettings) -> ClientLimits:
    """How slow a client of the push intake may be, and how many connections it may hold."""
    return ClientLimits(
        header_timeout=settings.push_header_timeout,
        body_timeout=settings.push_body_timeout,
        max_connections_per_client=settings.push_max_connections_per_client,
        evict_after=settings.push_evict_after,
    )


def open_push_ledger(data_dir: Path, settings: SegwaySettings) -> PushLedger:
    """The adapter's ledger of stored pushes, ``<data>/segway/pushes.sqlite`` (kept across restarts)."""
    ledger = PushLedger(
        path=data_dir / "pushes.sqlite", window=settings.push_window, capacity=settings.push_replay_capacity
    )
    ledger.open()
    return ledger


def create_push_app(
    sink: BridgeSink,
    settings: SegwaySettings,
    *,
    stats: PushStats | None = None,
    ledger: PushLedger | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The webhook receiver as a Starlette app (``app.state.stats`` counts what happened).

    ``ledger`` remembers the pushes stored (opened by the caller; without one, an in-memory ledger
    of this app's own, forgotten with it)."""
    counters = stats if stats is not None else PushStats()
    secret = settings.client_secret
    devices = frozenset(settings.devices)
    if ledger is None:
        ledger = PushLedger(path=None, window=settings.push_window, capacity=settings.push_replay_capacity)
        ledger.open(now=clock())
    seen = ledger
    #: pushes being stored, by signature: a copy that arrives meanwhile waits for the outcome
    storing: dict[str, anyio.Event] = {}

    async def on_status(push: BaseModel) -> bool | None:
        assert isinstance(push, StatusPush)
        return await sink.report(push.iot_code, status_patch(push), source="push")

    async def on_location(push: BaseModel) -> bool | None:
        assert isinstance(push, LocationPush)
        patch = location_patch(push)
        if patch is None:
            counters.count("dropped_position")
            return None
        return await sink.report(push.iot_code, patch, source="push")

    async def on_alert(push: BaseModel) -> bool | None:
        assert isinstance(push, AlertPush)
        await sink.event(push.iot_code, EventType.ALERT, alert_event(push))
        return True

    async def on_fault(push: BaseModel) -> bool | None:
        assert isinstance(push, FaultPush)
        await sink.event(push.iot_code, EventType.FAULT, fault_event(push))
        return True

    # path -> (model, handler, the field that dates the push)
    kinds: dict[str, tuple[type[BaseModel], Handler, str]] = {
        "/v2/vehicle/status": (StatusPush, on_status, "statusUtcTime"),
        "/v2/vehicle/location": (LocationPush, on_location, "gpsUtcTime"),
        "/v2/vehicle/alert": (AlertPush, on_alert, "statusUtcTime"),
        "/v2/vehicle/fault": (FaultPush, on_fault, "statusUtcTime"),
    }

    async def once(signature: str, observed: float, store: Callable[[], Awaitable[Response]]) -> Response:
        """Store a push unless it is stale or stored already (see the module doc)."""
        while (pending := storing.get(signature)) is not None:
            await pending.wait()  # a copy being stored: its outcome decides
        verdict = seen.verdict(signature, observed, now=clock())
        if verdict is Verdict.STALE:
            counters.count("stale")
            return _ok(f"ignored: dated more than {settings.push_window:g} s before it arrived")
        if verdict is Verdict.REPLAYED:
            counters.count("replayed")
            return _ok("ignored: already stored")
        storing[signature] = done = anyio.Event()
        try:
            answer = await store()
            if answer.status_code == 200:
                seen.remember(signature, observed, now=clock())
            return answer
        finally:
            del storing[signature]
            done.set()

    async def receive(request: Request) -> Response:
        counters.count("received")
        model, handler, dated_by = kinds[request.url.path]
        try:
            body = await _read_body(request, settings.push_max_body)
        except _TooLarge:
            counters.count("too_large")
            return _refuse(413, "body too large")
        except ClientDisconnect:  # cut off for being too slow (twin.http_guard counted it), or gone
            return _refuse(408, "request not received in time")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
            counters.count("invalid")
            return _refuse(415, f"expected {_FORM}")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            counters.count("invalid")
            return _refuse(400, "unreadable form")
        fields = dict(pairs)
        if len(fields) != len(pairs) or not _signed(body, fields, secret.get_secret_value()):
            counters.count("bad_signature")
            log.warning("segway push to %s refused: bad or missing signature", request.url.path)
            return _refuse(401, "bad signature")
        platform = fields.get("platformCode")
        if platform is not None and platform != settings.client_id:
            counters.count("bad_signature")
            return _refuse(401, "wrong platform code")
        try:
            push = model.model_validate(fields)
        except ValidationError:
            counters.count("invalid")
            return _refuse(400, "invalid push")
        if getattr(push, "iot_code", "") not in devices:
            counters.count("unknown_device")
            return _ok()  # not ours: answered so that Segway does not send it again
        try:
            observed = from_vendor_time(getattr(push, _DATE_ATTRIBUTES[dated_by]))
        except (ValueError, OverflowError, OSError):
            counters.count("invalid")
            return _refuse(400, f"{dated_by} is not a time")
        if observed is None:
            counters.count("undated")
            return _refuse(400, f"push without {dated_by}: its age cannot be told")
        signature = _signature_of(fields)
        assert signature is not None  # verified above

        async def store() -> Response:
            try:
                outcome = await handler(push)
            except Exception:
                # not stored: no 200, so Segway's retry brings it again
                log.exception("segway push to %s not stored", request.url.path)
                return _refuse(503, "not stored, try again")
            if outcome is False:
                counters.count("unknown_device")
            elif outcome is True:
                counters.count("stored")
            return _ok()

        try:
            return await once(signature, observed.timestamp(), store)
        except Exception:
            # stored, but not remembered (the ledger cannot write): not 200, so that it is visible
            log.exception("segway push to %s stored but not remembered", request.url.path)
            return _refuse(503, "not remembered, try again")

    app = Starlette(routes=[Route(path, receive, methods=["POST"]) for path in PUSH_PATHS])
    app.state.stats = counters
    return app
