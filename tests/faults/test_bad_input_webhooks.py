"""Garbage at a real ``locktwin run segway`` (push intake on): its four webhooks and its MQTT topics
with odd device ids. Every request is answered with a clear error (or, for a well-signed push about
a device that is not ours, the documented ``200`` that stops Segway from sending it again), the
process stays up, and no twin changes: the retained twin versions are the same before and after.

The MQTT garbage of every other kind is in ``tests/test_bad_input.py`` (fake adapter); this adds
odd and wildcard-ish device ids and the "twin unchanged" check against a real vendor bridge.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio.from_thread
import httpx
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridges.segway.push import PUSH_PATHS
from bridges.segway.settings import DEFAULT_PUSH_MAX_BODY
from bridges.segway.simulator import DEMO_CLIENT_SECRET, SegwaySimulator, sign_push
from tests.faults.common import log
from twin.broker import free_port
from twin.testing_process import BridgeProcess

FORM = "application/x-www-form-urlencoded"
ERROR_STATUSES = {400, 401, 404, 405, 413, 415}


@dataclass
class Running:
    bridge: BridgeProcess
    push_url: str
    base: str
    broker_url: str
    devices: list[str]
    client_id: str
    versions_before: dict[str, int]


def twin_versions(
    url: str,
    base: str,
    devices: list[str],
    timeout: float = 15.0,
    ready: Callable[[dict[str, Any]], bool] = lambda twin: True,
) -> dict[str, int]:
    """The retained twin version of every device, as a new subscriber gets it, once every twin is
    ``ready`` (waiting for its next versions meanwhile)."""
    host, port = url.removeprefix("mqtt://").split(":")
    seen: dict[str, int] = {}
    done = threading.Event()

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        device = m.topic.split("/")[-2]
        twin = json.loads(m.payload)
        if ready(twin):
            seen[device] = twin["version"]
        else:
            seen.pop(device, None)
        if len(seen) == len(devices):
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.subscribe(f"{base}/segway/+/twin", qos=1)
        assert done.wait(timeout), f"retained twins of {set(devices) - set(seen)} missing"
    finally:
        client.loop_stop()
        client.disconnect()
    return seen


@pytest.fixture(scope="module")
def running(mqtt_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("webhooks")
    sim = SegwaySimulator(client_secret=DEMO_CLIENT_SECRET, devices=3)
    ids = list(sim.fleet.ids)
    push_port = free_port()
    base = f"lt-hook-{uuid.uuid4().hex[:8]}"
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(sim.serve()) as served,  # the cloud, in a thread of its own
    ):
        bridge = BridgeProcess(
            vendor="segway",
            broker_url=mqtt_broker,
            data_dir=workdir / "data",
            base=base,
            env={
                "LOCKTWIN_SEGWAY_CLIENT_ID": sim.client_id,
                "LOCKTWIN_SEGWAY_CLIENT_SECRET": DEMO_CLIENT_SECRET,
                "LOCKTWIN_SEGWAY_BASE_URL": served.url,
                "LOCKTWIN_SEGWAY_DEVICES": json.dumps(ids),
                "LOCKTWIN_SEGWAY_POLL_INTERVAL": "3600",
                "LOCKTWIN_SEGWAY_PUSH_ENABLED": "true",
                "LOCKTWIN_SEGWAY_PUSH_PORT": str(push_port),
            },
            log_path=workdir / "bridge.log",
        )
        bridge.start()
        try:
            bridge.wait_online()
            # the first polls (jittered over 5 s) are in the twins, so that nothing changes them later
            versions = twin_versions(mqtt_broker, base, ids, ready=lambda twin: "lock" in twin["reported"])
            yield Running(bridge, f"http://127.0.0.1:{push_port}", base, mqtt_broker, ids, sim.client_id, versions)
        finally:
            bridge.stop()


# -- the webhooks ------------------------------------------------------------------------------------

odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
odd_ids = st.sampled_from(["", "+", "#", "../x", "a" * 300, "861477030000000 ", "\u202e0000", "\U0001f6f4"]) | odd_text
form_values = odd_text | st.integers().map(str) | st.floats().map(str) | st.sampled_from(["true", "null", "[]", "{}"])
form_keys = (
    st.sampled_from(
        ["iotCode", "locked", "online", "powerPercent", "latitude", "longitude", "statusUtcTime", "code", "alertStatus"]
    )
    | odd_text
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str], set[int]]:
    """(path, body, headers, the statuses that would be right)."""
    path = draw(st.sampled_from([*PUSH_PATHS, "/v2/vehicle/nope", "/"]))
    kind = draw(st.sampled_from(["bytes", "unsigned", "bad_signature", "signed_bad_types", "signed_odd_id", "type"]))
    headers = {"content-type": FORM}
    fields: dict[str, str] = draw(st.dictionaries(form_keys, form_values, max_size=8))
    expected = {400, 401}
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "unsigned":
        body = urlencode(fields).encode()
        expected = {401}
    elif kind == "bad_signature":
        fields["signature"] = draw(st.text(alphabet="0123456789abcdef", min_size=0, max_size=32)) + "x"
        body = urlencode(fields).encode()
        expected = {401}
    elif kind == "signed_bad_types":
        # a device of ours, signed right, with a code that is no number: refused, nothing stored
        path = draw(st.sampled_from(["/v2/vehicle/alert", "/v2/vehicle/fault"]))
        fields.update(iotCode="861477030000000", code=draw(st.sampled_from(["x", "", "1.5e", "[1]", "\u0661x"])))
        fields.update(platformCode="E20081")
        fields["signature"] = sign_push({k: v for k, v in fields.items() if k != "signature"}, DEMO_CLIENT_SECRET)
        body = urlencode(fields).encode()
        expected = {400}
    elif kind == "signed_odd_id":
        fields["iotCode"] = draw(odd_ids)
        fields["platformCode"] = "E20081"
        fields.pop("signatrue", None)
        fields["signature"] = sign_push({k: v for k, v in fields.items() if k != "signature"}, DEMO_CLIENT_SECRET)
        body = urlencode(fields).encode()
        expected = {200, 400}  # not ours: 200 so that Segway does not send it again; or invalid
    else:
        headers = draw(st.sampled_from([{}, {"content-type": "application/json"}, {"content-type": "text/plain"}]))
        body = json.dumps(fields).encode()
        expected = {415}
    if path not in PUSH_PATHS:
        expected = {404, 405}
    return path, body, headers, expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_webhook_garbage_is_answered(running: Running, request: tuple[str, bytes, dict[str, str], set[int]]) -> None:
    path, body, headers, expected = request
    answer = httpx.post(running.push_url + path, content=body, headers=headers, timeout=10)
    assert answer.status_code in expected, (path, body[:200], answer.status_code, answer.text)
    if answer.status_code in ERROR_STATUSES - {404, 405}:
        doc = answer.json()
        assert doc["code"] == answer.status_code and doc["message"], doc
    assert running.bridge.alive()


@pytest.mark.parametrize("chunked", [False, True])
def test_webhook_body_over_the_limit(running: Running, chunked: bool) -> None:
    fields = {"iotCode": running.devices[0], "locked": "false", "pad": "x" * (DEFAULT_PUSH_MAX_BODY + 10)}
    fields["platformCode"] = running.client_id
    fields["signature"] = sign_push(fields, DEMO_CLIENT_SECRET)
    body = urlencode(fields).encode()
    content: Any = body
    if chunked:  # no Content-Length: the limit holds while reading

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        content = chunks()
    answer = httpx.post(
        running.push_url + "/v2/vehicle/status", content=content, headers={"content-type": FORM}, timeout=10
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["message"]
    assert running.bridge.alive()


# -- MQTT with odd device ids ------------------------------------------------------------------------

ODD_DEVICE_IDS = [
    "861477030000000 ",  # a device of ours plus a space
    "861477030000000x",
    "".join(chr(0xFF10 + int(c)) for c in "861477030000000"),  # fullwidth digits
    "%2B",
    "*",
    "..",
    "$SYS",
    "\u202e861477030000000",
    "\U0001f6f4",
    "a" * 129,
    "a" * 5000,
]


def test_mqtt_odd_device_ids_are_refused(running: Running) -> None:
    host, port = running.broker_url.removeprefix("mqtt://").split(":")
    reply_topic = f"{running.base}-replies/{uuid.uuid4().hex[:8]}"
    answers: dict[bytes, dict[str, Any]] = {}
    cond = threading.Condition()

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        with cond:
            answers[getattr(m.properties, "CorrelationData", b"")] = json.loads(m.payload)
            cond.notify_all()

    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, int(port))
    client.loop_start()
    refused = unrouted = 0
    try:
        client.subscribe(reply_topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        cases = [(d, leaf) for d in ODD_DEVICE_IDS for leaf in ("set", "get", "request/find")]
        cases += [(f"{running.devices[0]}/extra", "set"), ("", "set")]
        for device, leaf in cases:
            corr = uuid.uuid4().bytes
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = corr
            body = json.dumps({"lock": "UNLOCKED", "transaction": f"odd-{uuid.uuid4().hex[:8]}"})
            client.publish(f"{running.base}/segway/{device}/{leaf}", body, qos=1, properties=props).wait_for_publish(5)
            with cond:
                cond.wait_for(lambda corr=corr: corr in answers, timeout=3)
            answer = answers.get(corr)
            if answer is None:
                unrouted += 1  # not a command topic of the contract (an extra level, an empty id): ignored
                continue
            assert answer["status"] == "rejected", (device[:40], leaf, answer)
            assert answer["error"]["code"] in {"UNKNOWN_DEVICE", "INVALID_PAYLOAD"}, answer
            refused += 1
    finally:
        client.loop_stop()
        client.disconnect()
    log(f"odd device ids over MQTT: {refused} refused with an error, {unrouted} not command topics (ignored)")
    assert refused >= len(ODD_DEVICE_IDS) * 3 - 3
    assert running.bridge.alive()


def test_no_twin_changed(running: Running) -> None:
    """Last in this module: after all of the above, every twin is at the version it had before."""
    after = twin_versions(running.broker_url, running.base, running.devices)
    log(f"twin versions before {running.versions_before}, after {after}")
    assert after == running.versions_before
    assert running.bridge.alive()
    # the control: a well-formed push of ours does move a twin, so "unchanged" above means something
    device = running.devices[0]
    fields = {"iotCode": device, "online": "true", "locked": "false", "powerPercent": "42"}
    fields["statusUtcTime"] = str(int(time.time()))
    fields["platformCode"] = running.client_id
    fields["signature"] = sign_push(fields, DEMO_CLIENT_SECRET)
    answer = httpx.post(
        running.push_url + "/v2/vehicle/status", content=urlencode(fields), headers={"content-type": FORM}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while (moved := twin_versions(running.broker_url, running.base, running.devices))[device] == after[device]:
        assert time.monotonic() < deadline, "a valid push never reached the twin"
        time.sleep(0.2)
    assert moved[device] > after[device], (after, moved)
