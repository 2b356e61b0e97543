"""The fleet service over HTTP: queries, jobs and zones as JSON, and the GBFS feed (read only).

::

    GET /query?q=vendor%3Dokai%20battery%3C20&sort=-battery&limit=50&cursor=...
    GET /jobs            GET /jobs/{job_id}            GET /zones            GET /health
    GET /gbfs/gbfs.json  (and system_information, vehicle_types, vehicle_status, geofencing_zones)

Everything that changes something (jobs, zones) goes over MQTT, where the broker authenticates the
sender and its ACL decides (a dashboard may read, not create a job); this listener binds to
127.0.0.1 by default. A bad query is a 400 with the error and the position of the mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contracts.errors import ErrorCode, ErrorInfo
from contracts.fleet import QueryRequest
from twin.fleet.gbfs import FILES, GbfsFeed, etag
from twin.fleet.jobs import JobManager
from twin.fleet.query import QueryError
from twin.fleet.search import Search, render_row
from twin.fleet.zones import ZoneBook
from twin.jsonenc import dumps

__all__ = ["build_app"]


def _json(doc: Any, status: int = 200) -> Response:
    return Response(dumps(doc), status_code=status, media_type="application/json")


def _error(message: str, *, position: int | None = None, status: int = 400) -> Response:
    body: dict[str, Any] = {"error": ErrorInfo.of(ErrorCode.INVALID_PAYLOAD, message).model_dump(mode="json")}
    if position is not None:
        body["position"] = position
    return _json(body, status)


def build_app(
    *, search: Search, jobs: JobManager, zones: ZoneBook, gbfs: GbfsFeed | None, health: Callable[[], dict[str, Any]]
) -> Starlette:
    async def query(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            req = QueryRequest.model_validate(params)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            return _error(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        try:
            page = search.page(req.q, sort=req.sort, limit=req.limit, page=req.page, cursor=req.cursor)
        except QueryError as exc:
            return _error(str(exc), position=exc.position)
        return _json(
            {
                "total": page.total,
                "rows": [render_row(r) for r in page.rows],
                "next_cursor": page.next_cursor,
                "took_ms": round(page.took_ms, 3),
            }
        )

    async def job_list(request: Request) -> Response:
        ordered = sorted(jobs.jobs.values(), key=lambda j: j.row.created_at, reverse=True)
        return _json({"jobs": [jobs.document(j) for j in ordered]})

    async def job_show(request: Request) -> Response:
        job = jobs.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(f"no job {request.path_params['job_id'][:64]!r}", status=404)
        return _json(jobs.document(job))

    async def zone_list(request: Request) -> Response:
        docs = [z.model_dump(mode="json") for z in sorted(zones.zones.values(), key=lambda z: z.id)]
        return _json({"zones": docs, "members": zones.members()})

    async def feed(request: Request) -> Response:
        name = request.path_params["name"]
        if gbfs is None or name not in FILES:
            return _error(f"no GBFS file {name[:64]!r}.json", status=404)
        base = str(request.base_url).rstrip("/") + "/gbfs"
        doc = gbfs.render(name, base)
        body = dumps(doc)
        tag = etag(body)
        headers = {"ETag": tag, "Cache-Control": f"max-age={doc['ttl']}"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def healthz(request: Request) -> Response:
        return _json(health())

    return Starlette(
        routes=[
            Route("/query", query),
            Route("/jobs", job_list),
            Route("/jobs/{job_id}", job_show),
            Route("/zones", zone_list),
            Route("/gbfs/{name}.json", feed),
            Route("/health", healthz),
        ]
    )
