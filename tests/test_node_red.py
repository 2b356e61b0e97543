"""The Node-RED example flow (examples/node-red/flows.json) against a real mosquitto and a real bridge.

Node-RED is installed from npm into ``.cache/node-red`` (once; pinned) and run headless with the
example flow. The test drives the flow only through its HTTP endpoints and watches MQTT with its own
paho client: the flow shows the locks' retained states, its commands reach the bridge (the retained
state becomes UNLOCKED and the bridge's final answer is ``succeeded``), and the answers come back into
the flow both ways: on ``response/set`` by transaction, and on the flow's MQTT v5 Response Topic by
Correlation Data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.fake_adapter import TARGET
from twin.broker import free_port
from twin.testing_process import BridgeProcess

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "node-red" / "flows.json"
NODE_RED_VERSION = "4.1.15"
CACHE = ROOT / ".cache" / "node-red"
FINAL = {"succeeded", "failed", "expired", "superseded", "rejected"}

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the Node-RED example needs node and npm (Debian: apt-get install nodejs npm)",
)

SETTINGS_JS = """\
// Headless Node-RED for the test: no editor, no admin API, no credential secret prompt.
module.exports = {
    uiHost: "127.0.0.1",
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    disableEditor: true,
    mqttReconnectTime: 1000,
    functionExternalModules: false,
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    logging: { console: { level: "info", metrics: false, audit: false } },
};
"""


def install_node_red() -> Path:
    """``red.js`` of the pinned Node-RED in .cache/node-red, installed from npm on first use."""
    red = CACHE / "node_modules" / "node-red" / "red.js"
    stamp = CACHE / f".installed-{NODE_RED_VERSION}"
    CACHE.mkdir(parents=True, exist_ok=True)
    # Several test runs may share the checkout: one installs, the others wait for it.
    with (CACHE.parent / "node-red.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and red.exists()):
            done = subprocess.run(
                [
                    "npm",
                    "install",
                    "--prefix",
                    str(CACHE),
                    "--no-audit",
                    "--no-fund",
                    "--save-exact",
                    "--loglevel=error",
                    f"node-red@{NODE_RED_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, f"npm install node-red@{NODE_RED_VERSION} failed:\n{done.stderr[-4000:]}"
            stamp.touch()
    return red


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None
    correlation: bytes | None
    message_expiry: int | None = None

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Observer:
    """Every message under the test's base topic and under the flow's reply topics."""

    url: str
    base: str
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        host, port = self.url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe([(f"{self.base}/#", 1), ("locktwin-replies/node-red/#", 1)])

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        with self.lock:
            self.seen.append(
                Seen(
                    topic=msg.topic,
                    payload=msg.payload,
                    retain=bool(msg.retain),
                    response_topic=getattr(props, "ResponseTopic", None),
                    correlation=getattr(props, "CorrelationData", None),
                    message_expiry=getattr(props, "MessageExpiryInterval", None),
                )
            )

    def on(self, topic: str) -> list[Seen]:
        with self.lock:
            return [m for m in self.seen if m.topic == topic]

    def answers(self, topic: str, transaction: str) -> list[Seen]:
        return [m for m in self.on(topic) if m.json().get("transaction") == transaction]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class NodeRed:
    proc: subprocess.Popen[bytes]
    http: httpx.Client
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def poll(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Call ``probe`` until it returns something (not None); fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"Node-RED exited ({self.proc.returncode}):\n{self.log_tail()}"
            try:
                result = probe()
            except (httpx.TransportError, json.JSONDecodeError) as exc:
                last = exc
            else:
                if result is not None:
                    return result
                last = "not yet"
            time.sleep(0.1)
        pytest.fail(f"{what} (last try: {last!r}); Node-RED log:\n{self.log_tail()}")


@contextlib.contextmanager
def node_red(red: Path, userdir: Path, broker_url: str, base: str) -> Iterator[NodeRed]:
    userdir.mkdir()
    shutil.copy(FLOWS, userdir / "flows.json")  # Node-RED may write next to its flow file
    (userdir / "settings.js").write_text(SETTINGS_JS)
    host, mqtt_port = broker_url.removeprefix("mqtt://").split(":")
    port = free_port()
    env = {**os.environ, "MQTT_HOST": host, "MQTT_PORT": mqtt_port, "LOCKTWIN_BASE": base}
    log = userdir / "node-red.log"
    with log.open("wb") as out:
        command = ["node", str(red), "--userDir", str(userdir), "--settings", str(userdir / "settings.js")]
        proc = subprocess.Popen(
            [*command, "--port", str(port), "flows.json"],
            cwd=userdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False)
    try:
        yield NodeRed(proc=proc, http=http, log=log)
    finally:
        http.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def final_answer(flow: NodeRed, transaction: str) -> dict[str, Any]:
    """The flow's record of ``transaction`` once it holds the final answer."""

    def probe() -> dict[str, Any] | None:
        r = flow.http.get(f"/locktwin/answers/{transaction}")
        assert r.status_code in (200, 404), r.text
        record = r.json()
        return record if r.status_code == 200 and record["final"] else None

    return flow.poll(f"the flow never got the final answer to {transaction}", probe)


def state_on_mqtt(observer: Observer, topic: str) -> Any:
    states = observer.on(topic)
    return states[-1].json() if states else None


@pytest.mark.timeout(900)  # the first run installs Node-RED from npm
def test_node_red_flow_shows_locks_and_sends_commands(mqtt_broker: str, tmp_path: Path) -> None:
    red = install_node_red()
    data_dir = tmp_path / "bridge"
    with BridgeProcess(broker_url=mqtt_broker, data_dir=data_dir, vendor="fake", targets=[TARGET]) as bridge:
        base = bridge.base
        observer = Observer(mqtt_broker, base)
        try:
            with node_red(red, tmp_path / "node-red", mqtt_broker, base) as flow:
                # The flow shows every lock from the retained state topics (and the bridge itself).
                def table() -> dict[str, Any] | None:
                    body = flow.http.get("/locktwin/locks").json()
                    ready = (
                        body["mqtt"] == "connected"
                        and body["bridges"].get("fake") == "online"
                        and {"fake/d1", "fake/d2"} <= body["locks"].keys()
                    )
                    return body if ready else None

                shown = flow.poll("the flow never showed the fake locks", table)
                assert shown["base"] == base
                on_mqtt = flow.poll("no retained state of d1", lambda: state_on_mqtt(observer, f"{base}/fake/d1/state"))
                assert shown["locks"]["fake/d1"] == {**on_mqtt, "vendor": "fake", "device": "d1"}
                assert shown["locks"]["fake/d2"]["lock"] != "UNLOCKED"

                # Bad commands are refused by the flow and never published.
                bad = flow.http.post("/locktwin/command", json={"vendor": "fake", "device": "d1", "lock": "OPEN"})
                assert bad.status_code == 400, bad.text
                assert flow.http.get("/locktwin/answers/no-such-transaction").status_code == 404

                # 1. Answers by transaction, on <base>/fake/d1/response/set.
                sent = flow.http.post(
                    "/locktwin/command",
                    json={"vendor": "fake", "device": "d1", "lock": "UNLOCKED", "reply": "transaction"},
                )
                assert sent.status_code == 202, sent.text
                tx1 = sent.json()["transaction"]
                set_d1 = f"{base}/fake/d1/set"
                published = flow.poll("no /set for d1", lambda: observer.on(set_d1) or None)
                assert published[0].json()["transaction"] == tx1
                assert published[0].json()["lock"] == "UNLOCKED"
                # when it was issued and how long it may wait: in the payload and as MQTT 5 message expiry
                assert published[0].json()["issued_at"].endswith("Z")
                assert published[0].json()["expires_in"] == 30
                assert published[0].message_expiry is not None and 0 < published[0].message_expiry <= 30
                assert published[0].response_topic is None
                assert not published[0].retain

                response_d1 = f"{base}/fake/d1/response/set"
                flow.poll(
                    "the bridge never answered d1 with a final answer",
                    lambda: [a for a in observer.answers(response_d1, tx1) if a.json()["status"] in FINAL] or None,
                )
                statuses = [a.json()["status"] for a in observer.answers(response_d1, tx1)]
                assert statuses == ["accepted", "succeeded"]
                flow.poll(
                    "d1 never became UNLOCKED on MQTT",
                    lambda: (state_on_mqtt(observer, f"{base}/fake/d1/state") or {}).get("lock") == "UNLOCKED" or None,
                )

                record = final_answer(flow, tx1)
                assert record["status"] == "succeeded", record
                assert record["via"] == "transaction"
                assert [a["status"] for a in record["answers"]] == ["accepted", "succeeded"]
                assert (record["vendor"], record["device"], record["lock"]) == ("fake", "d1", "UNLOCKED")
                again = {"vendor": "fake", "device": "d1", "lock": "LOCKED", "transaction": tx1}
                assert flow.http.post("/locktwin/command", json=again).status_code == 409

                # 2. Answers by MQTT v5 correlation data, on the flow's own response topic.
                sent = flow.http.post("/locktwin/command", json={"vendor": "fake", "device": "d2", "lock": "UNLOCKED"})
                assert sent.status_code == 202, sent.text
                assert sent.json()["reply"] == "correlation"
                tx2 = sent.json()["transaction"]
                set_d2 = f"{base}/fake/d2/set"
                published = flow.poll("no /set for d2", lambda: observer.on(set_d2) or None)
                assert published[0].json()["transaction"] == tx2
                reply_topic = published[0].response_topic
                correlation = published[0].correlation
                assert reply_topic is not None
                assert reply_topic.startswith("locktwin-replies/node-red/")
                assert correlation

                replies = flow.poll(
                    "the bridge never answered d2 on the response topic",
                    lambda: (
                        [
                            r
                            for r in observer.on(reply_topic)
                            if r.correlation == correlation and r.json()["status"] in FINAL
                        ]
                        or None
                    ),
                )
                assert replies[0].json()["status"] == "succeeded"
                assert replies[0].json()["transaction"] == tx2
                flow.poll(
                    "d2 never became UNLOCKED on MQTT",
                    lambda: (state_on_mqtt(observer, f"{base}/fake/d2/state") or {}).get("lock") == "UNLOCKED" or None,
                )

                record = final_answer(flow, tx2)
                assert record["status"] == "succeeded", record
                assert record["via"] == "correlation"
                assert record["correlation"] == correlation.decode()
                assert record["response_topic"] == reply_topic
                assert [a["status"] for a in record["answers"]] == ["accepted", "succeeded"]
                assert {a["via"] for a in record["answers"]} == {"correlation"}

                # The flow's table followed both locks.
                def both_unlocked() -> bool | None:
                    locks = flow.http.get("/locktwin/locks").json()["locks"]
                    return locks["fake/d1"]["lock"] == locks["fake/d2"]["lock"] == "UNLOCKED" or None

                flow.poll("the flow's table never showed d1 and d2 UNLOCKED", both_unlocked)
                assert bridge.proc.poll() is None
        finally:
            observer.close()
