"""The checked-in contract is generated from the models and is valid AsyncAPI 3.0."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import contracts
from contracts.generate import check

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
