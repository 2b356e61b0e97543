"""The fleet service's request ops, routed by a table: payload in, the contract's Response out.

Nothing here raises for bad input: a payload that is too large, not UTF-8, not a JSON object or
not the op's model is answered ``rejected`` with ``INVALID_PAYLOAD`` and a message naming the
field (or, for a filter, the position of the mistake, also in ``data.position``); an unknown op is
``UNSUPPORTED``; a retained request is ``RETAINED_COMMAND`` (it would run again at every restart).
An unexpected failure is answered ``failed``, logged, and the service goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from contracts.errors import ErrorCode, ErrorInfo
from contracts.fleet import (
    JobCreateRequest,
    JobListRequest,
    JobRequest,
    QueryRequest,
    SetOperation,
    ZoneDocument,
    ZoneListRequest,
    ZonePutRequest,
    ZoneRequest,
)
from contracts.messages import DesiredLock
from twin.fleet.jobs import JobError, JobManager
from twin.fleet.query import QueryError
from twin.fleet.search import Search, render_row
from twin.fleet.zones import ZoneBook, ZoneError

__all__ = ["FleetRequests", "RequestError", "parse_request"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class RequestError(Exception):
    def __init__(self, code: ErrorCode, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = ErrorInfo.of(code, message)
        self.data = data


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        parts.append(f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}")
    return "; ".join(parts)


def parse_request(payload: bytes, model: type[M], *, max_bytes: int) -> M:
    if len(payload) > max_bytes:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"payload larger than {max_bytes} bytes")
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "payload is not UTF-8") from None
    try:
        doc = orjson.loads(text) if text.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, _explain(exc)) from None


def _query_error(exc: QueryError, field: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_PAYLOAD, f"{field}: {exc}", data={"position": exc.position, "field": field})


def best_effort_transaction(payload: bytes) -> str | None:
    try:
        doc = orjson.loads(payload) if len(payload) <= 1024 * 1024 else None
    except orjson.JSONDecodeError:
        return None
    txn = doc.get("transaction") if isinstance(doc, dict) else None
    return txn if isinstance(txn, str) and 0 < len(txn) <= 128 and txn.isascii() and txn.isprintable() else None


class FleetRequests:
    def __init__(
        self,
        *,
        search: Search,
        jobs: JobManager,
        zones: ZoneBook,
        max_bytes: int,
        on_zones_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.search = search
        self.jobs = jobs
        self.zones = zones
        self.max_bytes = max_bytes
        self.on_zones_changed = on_zones_changed
        self.routes: dict[str, Callable[[bytes], tuple[str | None, dict[str, Any]]]] = {
            "query": self._query,
            "job_create": self._job_create,
            "job_list": self._job_list,
            "job_show": lambda p: self._job(p, self.jobs.get),
            "job_pause": lambda p: self._job(p, lambda j: self.jobs.pause(j, True)),
            "job_resume": lambda p: self._job(p, lambda j: self.jobs.pause(j, False)),
            "job_cancel": lambda p: self._job(p, self.jobs.cancel),
            "zone_put": self._zone_put,
            "zone_delete": self._zone_delete,
            "zone_list": self._zone_list,
        }

    def handle(self, op: str, payload: bytes, *, retained: bool = False) -> dict[str, Any]:
        """The Response document answering one request."""
        transaction = best_effort_transaction(payload)
        try:
            if retained:
                raise RequestError(
                    ErrorCode.RETAINED_COMMAND,
                    "retained requests are refused; publish requests without the retain flag",
                )
            route = self.routes.get(op)
            if route is None:
                raise RequestError(ErrorCode.UNSUPPORTED, f"no fleet op {op[:64]!r} (ops: {', '.join(self.routes)})")
            transaction, data = route(payload)
        except RequestError as exc:
            return _response(transaction, "rejected", exc.data, exc.error)
        except Exception:
            log.exception("fleet request %s failed", op)
            error = ErrorInfo.of(
                ErrorCode.VENDOR_ERROR, "the fleet service failed to handle this request (see its log)"
            )
            return _response(transaction, "failed", None, error)
        return _response(transaction, "succeeded", data, None)

    def refuse(self, payload: bytes, message: str) -> dict[str, Any]:
        error = ErrorInfo.of(ErrorCode.INVALID_PAYLOAD, message)
        return _response(best_effort_transaction(payload), "rejected", None, error)

    # -- ops -------------------------------------------------------------------------------------
    def _query(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, QueryRequest, max_bytes=self.max_bytes)
        try:
            page = self.search.page(req.q, sort=req.sort, limit=req.limit, page=req.page, cursor=req.cursor)
        except QueryError as exc:
            raise _query_error(exc, "sort" if "sort" in str(exc) or "cursor" in str(exc) else "q") from None
        rows = [render_row(r) for r in page.rows]
        return req.transaction, {
            "total": page.total,
            "rows": rows,
            "next_cursor": page.next_cursor,
            "took_ms": round(page.took_ms, 3),
        }

    def _job_create(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, JobCreateRequest, max_bytes=self.max_bytes)
        if req.target.query is not None:
            try:
                self.search.compile(req.target.query)
            except QueryError as exc:
                raise _query_error(exc, "target.query") from None
        op = req.operation
        if isinstance(op, SetOperation) and op.field == "lock" and op.value not in (d.value for d in DesiredLock):
            raise RequestError(ErrorCode.INVALID_PAYLOAD, "operation.value: lock takes LOCKED or UNLOCKED")
        if req.dry_run:
            return req.transaction, self.jobs.dry_run(req)
        job = self.jobs.create(req, request_tx=req.transaction)
        return req.transaction, self.jobs.document(job)

    def _job_list(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, JobListRequest, max_bytes=self.max_bytes)
        jobs = sorted(self.jobs.jobs.values(), key=lambda j: j.row.created_at, reverse=True)
        if req.status is not None:
            jobs = [j for j in jobs if j.status == req.status]
        return req.transaction, {"jobs": [self.jobs.document(j) for j in jobs[: req.limit]]}

    def _job(self, payload: bytes, act: Callable[[str], Any]) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, JobRequest, max_bytes=self.max_bytes)
        try:
            job = act(req.job_id)
        except JobError as exc:
            raise RequestError(ErrorCode.INVALID_PAYLOAD, str(exc)) from None
        return req.transaction, self.jobs.document(job)

    def _zone_put(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, ZonePutRequest, max_bytes=self.max_bytes)
        try:
            zone = self.zones.put(ZoneDocument.model_validate(req.model_dump(exclude={"transaction"})))
        except ZoneError as exc:
            raise RequestError(ErrorCode.INVALID_PAYLOAD, str(exc)) from None
        self.on_zones_changed()
        return req.transaction, zone.model_dump(mode="json")

    def _zone_delete(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, ZoneRequest, max_bytes=self.max_bytes)
        if not self.zones.delete(req.zone_id):
            raise RequestError(ErrorCode.INVALID_PAYLOAD, f"no zone {req.zone_id!r}")
        self.on_zones_changed()
        return req.transaction, {"zone_id": req.zone_id, "deleted": True}

    def _zone_list(self, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        req = parse_request(payload, ZoneListRequest, max_bytes=self.max_bytes)
        zones = [z.model_dump(mode="json") for z in sorted(self.zones.zones.values(), key=lambda z: z.id)]
        return req.transaction, {"zones": zones, "members": self.zones.members()}


def _response(
    transaction: str | None, status: str, data: dict[str, Any] | None, error: ErrorInfo | None
) -> dict[str, Any]:
    return {
        "transaction": transaction,
        "command_id": None,
        "status": status,
        "data": data,
        "error": None if error is None else error.model_dump(mode="json"),
    }
