"""The checked-in contract is generated from the models and is valid AsyncAPI 3.0."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import contracts
from contracts.generate import check
from contracts.messages import BridgeActions, BridgeDevices, DeviceState, Event, Response, TwinDocument
from tests.fake_adapter import FakeAdapter
from twin.testing import BridgeHarness

CONTRACTS = Path(contracts.__file__).resolve().parent
ASYNCAPI_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"


def _registry(schema: dict[str, object]) -> Registry:
    definitions = schema.get("definitions", {})
    assert isinstance(definitions, dict)
    return Registry().with_resources(
        (key, Resource.from_contents(sub, default_specification=DRAFT7)) for key, sub in definitions.items()
    )


def test_generated_files_match_models() -> None:
    assert check(CONTRACTS) == []


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    registry = _registry(schema)
    doc = json.loads((CONTRACTS / "asyncapi.json").read_text())
    validator = jsonschema.Draft7Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_asyncapi_validation_catches_a_broken_document() -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    registry = _registry(schema)
    doc = json.loads((CONTRACTS / "asyncapi.json").read_text())
    doc["operations"]["setDesired"]["action"] = "shout"
    assert not jsonschema.Draft7Validator(schema, registry=registry).is_valid(doc)


def test_published_payloads_validate_against_schemas() -> None:
    schema = json.loads((CONTRACTS / "schemas" / "Response.json").read_text())
    jsonschema.validate(
        {
            "transaction": "t",
            "command_id": "c",
            "status": "failed",
            "data": None,
            "error": {
                "code": "DEVICE_BUSY",
                "message": "riding",
                "vendor_code": "15600",
                "vendor_message": None,
                "retryable": False,
                "retry_after": None,
            },
        },
        schema,
    )


@pytest.mark.anyio
async def test_everything_published_matches_the_contract(mqtt_broker: str, tmp_path: Path) -> None:
    """The renderers build JSON directly for speed; every message they produce must fit the models."""
    adapter = FakeAdapter()
    adapter.locks["d1"].position = (48.1, 11.5)
    adapter.locks["d2"].online = False
    async with BridgeHarness(adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path) as h:
        await h.set("d1", {"lock": "UNLOCKED"})
        await h.set("d2", {"lock": "UNLOCKED", "expires_in": 0.5})
        await h.request("d1", "find", {"volume": 1})
        await h.set("d1", {"codes": {"abc-1234": "x"}})
        await h.get("d1")
        await h.publish(h.topic("d1", "set"), b"nonsense")
        await h.wait_for(lambda: any(r["status"] == "rejected" for r in h.responses("d1")))
        models = {
            "twin": TwinDocument,
            "state": DeviceState,
            "event": Event,
            "devices": BridgeDevices,
            "actions": BridgeActions,
        }
        checked: dict[str, int] = {}
        for topic, payload, _, _ in h.messages:
            leaf = topic.rsplit("/", 1)[-1]
            if "/response/" in topic:
                Response.model_validate_json(payload)
                checked["response"] = checked.get("response", 0) + 1
            elif topic.endswith("/state") and "/bridge/" in topic:
                assert payload in (b"online", b"offline")
            elif leaf in models and "/homeassistant/" not in topic:
                models[leaf].model_validate_json(payload)
                checked[leaf] = checked.get(leaf, 0) + 1
        assert set(checked) == {"twin", "state", "event", "devices", "actions", "response"}, checked
