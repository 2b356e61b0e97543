"""Bad input on every request topic of the fleet service: a clear error, nothing created, and the
service goes on (a hypothesis run throws arbitrary bytes at every op)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.fleet import FLEET_OPS
from contracts.messages import Response
from twin.fleet.requests import FleetRequests
from twin.testing import v5_reply

from .helpers import running_fleet

pytestmark = pytest.mark.anyio

GARBAGE = [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b"x" * (1024 * 1024 + 1), "larger than"),
]
WRONG = {
    "query": ({"q": 42}, "q: Input should be a valid string"),
    "job_create": (
        {
            "target": {"query": "vendor=fake"},
            "operation": {"kind": "set", "field": "lock", "value": "LOCKED"},
            "rollot": {},
        },
        "rollot: Extra inputs are not permitted",
    ),
    "job_list": ({"status": "DONE"}, "status: Input should be"),
    "job_show": ({}, "job_id: Field required"),
    "job_pause": ({"job_id": "no such job"}, "job_id: String should match pattern"),
    "job_resume": ({"job_id": "job-nope"}, "no job 'job-nope'"),
    "job_cancel": ({"job_id": 7}, "job_id: Input should be a valid string"),
    "zone_put": (
        {
            "id": "z",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
            "rules": ["no_smoking"],
        },
        "rules.0: Input should be",
    ),
    "zone_delete": ({"zone_id": "missing"}, "no zone 'missing'"),
    "zone_list": ({"transaction": ""}, "transaction: String should match pattern"),
}


async def test_every_request_topic_answers_bad_input(mqtt_broker: str, tmp_path: Path) -> None:
    base = f"lt-fb-{uuid.uuid4().hex[:8]}"
    async with running_fleet(mqtt_broker, tmp_path, base) as (service, probe):
        assert set(WRONG) == set(FLEET_OPS)
        for op in FLEET_OPS:
            for n, (payload, _) in enumerate(GARBAGE):
                # the transaction is unreadable in garbage: answers are told apart by correlation data
                correlation = f"{op}-{n}".encode()
                await probe.publish(
                    f"{base}/fleet/request/{op}", payload, properties=v5_reply(probe.reply, correlation)
                )
            body, expected = WRONG[op]
            answer = await probe.request(op, body)
            Response.model_validate(answer)
            assert answer["status"] == "rejected" and answer["error"]["code"] == "INVALID_PAYLOAD", (op, answer)
            assert expected in answer["error"]["message"], (op, answer["error"]["message"])
        keys = [f"{op}-{n}".encode() for op in FLEET_OPS for n in range(len(GARBAGE))]
        await probe.wait_for(lambda: all(k in probe.correlated for k in keys))
        garbage = [probe.correlated[k] for k in keys]
        assert all(a["status"] == "rejected" and a["error"]["code"] == "INVALID_PAYLOAD" for a in garbage)
        for _, expected in GARBAGE:
            assert sum(expected in a["error"]["message"] for a in garbage) == len(FLEET_OPS)

        unknown = await probe.request("job_delete", {"job_id": "job-1"})
        assert unknown["error"]["code"] == "UNSUPPORTED" and "job_create" in unknown["error"]["message"]
        await probe.publish(f"{base}/fleet/request/zone_list", b"{}", retain=True)
        await probe.publish(f"{base}/fleet/request/zone_list", b"", retain=True)  # clears it again
        retained = await probe.wait_for(
            lambda: [json.loads(p) for t, p, _ in probe.messages if t == f"{base}/fleet/response/zone_list"]
        )
        assert retained[0]["error"]["code"] == "RETAINED_COMMAND"
        # an answer may not be sent into the contract's own tree
        await probe.publish(
            f"{base}/fleet/request/zone_list",
            b'{"transaction":"t-spoof"}',
            properties=v5_reply(f"{base}/fleet/zones/evil", b"x"),
        )
        refused = await probe.wait_for(lambda: probe.answers.get("t-spoof"))
        assert refused["status"] == "rejected" and "response topic" in refused["error"]["message"]
        assert f"{base}/fleet/zones/evil" not in probe.retained
        assert service.jobs.jobs == {} and service.zones.zones == {}
        assert (await probe.request("zone_list"))["status"] == "succeeded"  # still serving


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from([*FLEET_OPS, "nope"]),
    payload=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(
                [
                    "q",
                    "job_id",
                    "zone_id",
                    "target",
                    "operation",
                    "geometry",
                    "id",
                    "rules",
                    "sort",
                    "limit",
                    "cursor",
                    "schedule",
                    "rollout",
                    "transaction",
                ]
            ),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                max_leaves=8,
            ),
            max_size=5,
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_any_payload_gets_an_answer_of_the_contract(fleet_requests: FleetRequests, op: str, payload: bytes) -> None:
    answer = fleet_requests.handle(op, payload)
    Response.model_validate(answer)
    assert answer["status"] in ("succeeded", "rejected")
