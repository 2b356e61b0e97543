"""Generate the JSON Schemas and the AsyncAPI 3.0 document from the models (``locktwin contracts``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts.fleet import (
    DryRun,
    JobCreateRequest,
    JobDocument,
    JobEvent,
    JobList,
    JobListRequest,
    JobRequest,
    QueryRequest,
    QueryResult,
    ZoneDocument,
    ZoneEvent,
    ZoneList,
    ZoneListRequest,
    ZonePutRequest,
    ZoneRequest,
)
from contracts.messages import (
    ActionRequest,
    BridgeActions,
    BridgeBudget,
    BridgeDevices,
    BridgeHealth,
    DeviceState,
    Event,
    GetRequest,
    InstancePartitions,
    Response,
    SetRequest,
    TwinDocument,
)

__all__ = ["asyncapi", "check", "json_schemas", "render", "write"]

MODELS: dict[str, type[BaseModel]] = {
    "SetRequest": SetRequest,
    "GetRequest": GetRequest,
    "ActionRequest": ActionRequest,
    "Response": Response,
    "TwinDocument": TwinDocument,
    "DeviceState": DeviceState,
    "Event": Event,
    "BridgeDevices": BridgeDevices,
    "BridgeHealth": BridgeHealth,
    "InstancePartitions": InstancePartitions,
    "BridgeActions": BridgeActions,
    "BridgeBudget": BridgeBudget,
    # the fleet service (contracts/fleet.py)
    "QueryRequest": QueryRequest,
    "JobCreateRequest": JobCreateRequest,
    "JobListRequest": JobListRequest,
    "JobRequest": JobRequest,
    "ZonePutRequest": ZonePutRequest,
    "ZoneRequest": ZoneRequest,
    "ZoneListRequest": ZoneListRequest,
    "QueryResult": QueryResult,
    "JobDocument": JobDocument,
    "JobList": JobList,
    "DryRun": DryRun,
    "JobEvent": JobEvent,
    "ZoneDocument": ZoneDocument,
    "ZoneList": ZoneList,
    "ZoneEvent": ZoneEvent,
}
#: what users send: its schema is the one validation accepts
INBOUND = frozenset(
    {
        "SetRequest",
        "GetRequest",
        "ActionRequest",
        "QueryRequest",
        "JobCreateRequest",
        "JobListRequest",
        "JobRequest",
        "ZonePutRequest",
        "ZoneRequest",
        "ZoneListRequest",
    }
)
AVAILABILITY = {"type": "string", "enum": ["online", "offline"]}
SESSION_MARKER = {
    "type": "string",
    "pattern": "^[0-9a-f]{32}$",
    "description": "a random id the bridge publishes to itself after connecting; what arrives before it "
    "may have waited in the bridge's persistent session (see README: commands of unknown age)",
}
PARAMS = {
    "vendor": {"description": "adapter name, e.g. segway, okai, tuya, smartcar"},
    "device": {"description": "the vendor's device id, matching ^[A-Za-z0-9_.:-]{1,128}$"},
    "action": {"description": "a vendor action listed in bridge/{vendor}/devices"},
    "page": {"description": "a page of the device list after the first, 1 .. pages-1"},
    "op": {"description": "a fleet request op: query, job_create, job_list, job_show, job_pause, ... zone_list"},
    "job_id": {"description": "a job's id, as job_create answered it"},
    "zone_id": {"description": "a zone's id, ^[A-Za-z0-9_.-]{1,64}$"},
}
# the fleet service's request channels: op -> (message, description)
FLEET_REQUESTS: dict[str, tuple[str, str]] = {
    "query": ("QueryRequest", "devices matching a filter; data: QueryResult"),
    "job_create": ("JobCreateRequest", "a job (or its target set, with dry_run); data: JobDocument or DryRun"),
    "job_list": ("JobListRequest", "jobs, newest first; data: JobList"),
    "job_show": ("JobRequest", "one job; data: JobDocument"),
    "job_pause": ("JobRequest", "stop sending a job's executions; data: JobDocument"),
    "job_resume": ("JobRequest", "send them again; data: JobDocument"),
    "job_cancel": ("JobRequest", "end a job, its queued executions CANCELED; data: JobDocument"),
    "zone_put": ("ZonePutRequest", "create or replace a zone; data: ZoneDocument"),
    "zone_delete": ("ZoneRequest", "delete a zone"),
    "zone_list": ("ZoneListRequest", "zones with their member counts; data: ZoneList"),
}
# channel id -> (address, message, description, retained)
CHANNELS: dict[str, tuple[str, str, str, bool]] = {
    "set": ("{vendor}/{device}/set", "SetRequest", "desired patch, or the plain payloads LOCK / UNLOCK", False),
    "get": ("{vendor}/{device}/get", "GetRequest", "refresh the twin from the vendor now", False),
    "request": ("{vendor}/{device}/request/{action}", "ActionRequest", "a vendor operation that is not state", False),
    "setResponse": ("{vendor}/{device}/response/set", "Response", "accepted/rejected, then one final answer", False),
    "getResponse": ("{vendor}/{device}/response/get", "Response", "the refreshed twin or an error", False),
    "requestResponse": ("{vendor}/{device}/response/{action}", "Response", "answers of an action", False),
    "state": ("{vendor}/{device}/state", "DeviceState", "flat state for dashboards and Home Assistant", True),
    "twin": ("{vendor}/{device}/twin", "TwinDocument", "desired, reported, delta, metadata, command", True),
    "availability": ("{vendor}/{device}/availability", "Availability", "the device, as the vendor says", True),
    "event": ("{vendor}/{device}/event", "Event", "command transitions, drift, vendor alerts and faults", False),
    "bridgeState": ("bridge/{vendor}/state", "Availability", "the bridge process; its last will", True),
    "bridgeHealth": ("bridge/{vendor}/health", "BridgeHealth", "ok, or degraded while its store cannot write", True),
    "bridgeDevices": ("bridge/{vendor}/devices", "BridgeDevices", "devices with capabilities and actions", True),
    "bridgeBudget": (
        "bridge/{vendor}/budget",
        "BridgeBudget",
        "the vendor account's requests this period, its budget and what is left",
        True,
    ),
    "bridgeActions": (
        "bridge/{vendor}/actions",
        "BridgeActions",
        "the vendor's action table: description and JSON Schema of each action's arguments",
        True,
    ),
    "bridgeDevicesPage": (
        "bridge/{vendor}/devices/{page}",
        "BridgeDevices",
        "the further pages of a device list larger than one page (see pages)",
        True,
    ),
    "bridgeSession": (
        "bridge/{vendor}/session",
        "SessionMarker",
        "the bridge's own end-of-backlog marker, read by the bridge only",
        False,
    ),
    "bridgeInstanceState": (
        "bridge/{vendor}/instances/{instance}/state",
        "Availability",
        "one instance of a bridge on a shared PostgreSQL store; its last will",
        True,
    ),
    "bridgeInstancePartitions": (
        "bridge/{vendor}/instances/{instance}/partitions",
        "InstancePartitions",
        "the partitions one instance serves, and whether it holds the intake",
        True,
    ),
    "fleetState": ("fleet/state", "Availability", "the fleet service process; its last will", True),
    **{
        f"fleet_{op}": (f"fleet/request/{op}", message, description, False)
        for op, (message, description) in FLEET_REQUESTS.items()
    },
    "fleetResponse": ("fleet/response/{op}", "Response", "answers of the fleet service's requests", False),
    "fleetJob": ("fleet/jobs/{job_id}", "JobDocument", "a job: status, counts per state, rate, estimated end", True),
    "fleetJobEvent": ("fleet/jobs/{job_id}/event", "JobEvent", "transitions of a job and its executions", False),
    "fleetZone": ("fleet/zones/{zone_id}", "ZoneDocument", "a zone: GeoJSON geometry and rules", True),
    "fleetZoneEvent": ("fleet/zones/{zone_id}/event", "ZoneEvent", "devices entering and leaving a zone", False),
}
# operation id -> (action, channel, reply channel)
OPERATIONS: dict[str, tuple[str, str, str | None]] = {
    "setDesired": ("receive", "set", "setResponse"),
    "refreshTwin": ("receive", "get", "getResponse"),
    "requestAction": ("receive", "request", "requestResponse"),
    "publishState": ("send", "state", None),
    "publishTwin": ("send", "twin", None),
    "publishAvailability": ("send", "availability", None),
    "publishEvent": ("send", "event", None),
    "publishBridgeState": ("send", "bridgeState", None),
    "publishBridgeHealth": ("send", "bridgeHealth", None),
    "publishBridgeDevices": ("send", "bridgeDevices", None),
    "publishBridgeBudget": ("send", "bridgeBudget", None),
    "publishBridgeDevicesPage": ("send", "bridgeDevicesPage", None),
    "markSessionBacklog": ("send", "bridgeSession", None),
    "publishBridgeActions": ("send", "bridgeActions", None),
    "publishBridgeInstanceState": ("send", "bridgeInstanceState", None),
    "publishBridgeInstancePartitions": ("send", "bridgeInstancePartitions", None),
    **{f"fleetRequest_{op}": ("receive", f"fleet_{op}", "fleetResponse") for op in FLEET_REQUESTS},
    "publishFleetState": ("send", "fleetState", None),
    "publishFleetJob": ("send", "fleetJob", None),
    "publishFleetJobEvent": ("send", "fleetJobEvent", None),
    "publishFleetZone": ("send", "fleetZone", None),
    "publishFleetZoneEvent": ("send", "fleetZoneEvent", None),
}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in MODELS.items()}


def asyncapi(base: str = "locktwin") -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization" if n not in INBOUND else "validation") for n, m in MODELS.items()],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = _asyncapi_discriminators(dict(defs["$defs"]))
    schemas["Availability"] = AVAILABILITY
    schemas["SessionMarker"] = SESSION_MARKER
    channels: dict[str, Any] = {}
    for cid, (address, message, description, retained) in CHANNELS.items():
        params = {p: {"$ref": f"#/components/parameters/{p}"} for p in PARAMS if "{" + p + "}" in address}
        channel: dict[str, Any] = {
            "address": f"{base}/{address}",
            "description": description + (" (retained)" if retained else " (not retained)"),
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        if params:
            channel["parameters"] = params
        channel["bindings"] = {"mqtt": {"bindingVersion": "0.2.0"}}
        channels[cid] = channel
    operations: dict[str, Any] = {}
    for oid, (action, cid, reply) in OPERATIONS.items():
        message = CHANNELS[cid][1]
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{message}"}],
            "bindings": {"mqtt": {"qos": 1, "retain": CHANNELS[cid][3], "bindingVersion": "0.2.0"}},
        }
        if reply is not None:
            op["reply"] = {
                "channel": {"$ref": f"#/channels/{reply}"},
                "messages": [{"$ref": f"#/channels/{reply}/messages/Response"}],
            }
        operations[oid] = op
    messages = {
        name: {"name": name, "contentType": "application/json", "payload": {"$ref": f"#/components/schemas/{name}"}}
        for name in {c[1] for c in CHANNELS.values()}
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "locktwin",
            "version": "0.1.0",
            "description": "Device twins of remote locks over MQTT. Commands are never retained; a retained "
            "command is refused with RETAINED_COMMAND. MQTT v5 Response Topic and Correlation Data are honoured.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages, "parameters": PARAMS},
    }


def _asyncapi_discriminators(node: Any) -> Any:
    """pydantic writes OpenAPI's discriminator object; an AsyncAPI schema names the property only."""
    if isinstance(node, dict):
        out = {k: _asyncapi_discriminators(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_discriminators(v) for v in node]
    return node


def render() -> dict[str, str]:
    """Relative path -> file content of everything generated."""
    files = {f"schemas/{n}.json": json.dumps(s, indent=2, sort_keys=True) + "\n" for n, s in json_schemas().items()}
    files["asyncapi.json"] = json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"
    return files


def write(out: Path) -> None:
    for rel, content in render().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def check(out: Path) -> list[str]:
    """Files that differ from what the models generate (empty when in sync)."""
    drift = []
    for rel, content in render().items():
        path = out / rel
        if not path.exists() or path.read_text() != content:
            drift.append(f"{path} is out of date: run `locktwin contracts`")
    return drift
