"""The demo's GBFS v3.0 feed, validated with PyPI ``gbfs-validator`` (0 errors), a copy with an
injected mistake that fails, vehicles in use left out and their vehicle_id rotated, and ETags."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gbfs_validator import GBFS  # type: ignore[import-untyped]

from twin.broker import MosquittoBroker, free_port

from .helpers import ROOT

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="the demo uses mosquitto")
FILES = ("gbfs", "system_information", "vehicle_types", "vehicle_status", "geofencing_zones")


class Demo:
    def __init__(self, data: Path, port: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twin.cli",
                "demo",
                "--no-live",
                "--data",
                str(data),
                "--port",
                str(port),
                "--devices",
                "2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lowercase names, body)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def vehicles(feed: str) -> list[dict[str, Any]]:
    return json.loads(get(f"{feed}/vehicle_status.json")[2])["data"]["vehicles"]


def until(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def validate(url: str) -> dict[str, Any]:
    report: dict[str, Any] = GBFS(url, freefloating=True).validation()
    return report


def errors_of(report: dict[str, Any]) -> dict[str, Any]:
    return {f["file"]: f.get("errors") for f in report["files"] if f.get("errorsCount")}


@pytest.mark.timeout(180)
def test_demo_feed_is_valid_gbfs_and_hides_vehicles_in_use(tmp_path: Path) -> None:
    port = free_port()
    demo = Demo(tmp_path / "demo", port)
    try:
        fleet = demo.wait_line(r"fleet service: (http://\S+)").group(1)
        demo.wait_line(r"(\d+) bridges online")
        feed = f"{fleet}/gbfs"
        listed = until(lambda: len(vehicles(feed)) == 4 and vehicles(feed))  # 2 OKAI scooters, 2 Segway e-bikes
        assert {v["vehicle_type_id"] for v in listed} == {"okai-scooter", "segway-ebike"}
        assert all(0 <= v["current_fuel_percent"] <= 1 and v["current_range_meters"] >= 0 for v in listed)

        report = validate(f"{feed}/gbfs.json")
        assert report["summary"]["errorsCount"] == 0, errors_of(report)
        assert report["summary"]["version"] == {"detected": "3.0", "validated": "3.0"}
        published = {f["file"] for f in report["files"] if f.get("exists")}
        assert published == {f"{name}.json" for name in FILES}
        zones = json.loads(get(f"{feed}/geofencing_zones.json")[2])["data"]["geofencing_zones"]["features"]
        assert len(zones) == 2 and all(z["geometry"]["type"] == "MultiPolygon" for z in zones)

        # the same files on disk validate too, and a mistake injected into the copy fails
        copy = tmp_path / "feed"
        copy.mkdir()
        for name in FILES:
            doc = json.loads(get(f"{feed}/{name}.json")[2])
            if name == "gbfs":
                for entry in doc["data"]["feeds"]:
                    entry["url"] = (copy / f"{entry['name']}.json").as_uri()
            (copy / f"{name}.json").write_text(json.dumps(doc))
        assert validate((copy / "gbfs.json").as_uri())["summary"]["errorsCount"] == 0
        broken = json.loads((copy / "vehicle_status.json").read_text())
        broken["data"]["vehicles"][0]["current_fuel_percent"] = 85  # a percentage where GBFS wants 0..1
        (copy / "vehicle_status.json").write_text(json.dumps(broken))
        failed = validate((copy / "gbfs.json").as_uri())
        assert failed["summary"]["hasErrors"] and set(errors_of(failed)) == {"vehicle_status.json"}

        # a rental: the scooter leaves the feed while UNLOCKED and comes back with a new vehicle_id
        okai = next(line for line in demo.lines if re.match(r"^\s*okai: simulator", line))
        scooter = okai.rsplit("devices ", 1)[1].split(",")[0].strip()
        before = {v["vehicle_id"] for v in vehicles(feed)}
        command(port, f"locktwin/okai/{scooter}/set", "UNLOCKED")
        until(lambda: len(vehicles(feed)) == 3)
        command(port, f"locktwin/okai/{scooter}/set", "LOCKED")
        after = {v["vehicle_id"] for v in until(lambda: len(vehicles(feed)) == 4 and vehicles(feed))}
        assert len(before - after) == 1 and len(after - before) == 1  # only the rented one changed its id

        # ETags: an unchanged file is not sent again
        status, headers, _ = get(f"{feed}/system_information.json")
        assert status == 200 and headers["etag"]
        status, _, body = get(f"{feed}/system_information.json", {"If-None-Match": headers["etag"]})
        assert status == 304 and body == b""
        assert get(f"{feed}/vehicle_status.json")[1]["cache-control"] == "max-age=30"
    finally:
        assert demo.stop() == 0, "\n".join(demo.lines)


def command(port: int, topic: str, lock: str) -> None:
    """A /set through the demo's broker, waiting for its final answer."""
    transaction = f"gbfs-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    answers: list[dict[str, Any]] = []

    def on_message(client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        doc = json.loads(message.payload)
        if doc.get("transaction") == transaction and doc["status"] != "accepted":
            answers.append(doc)
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=transaction)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic.rsplit("/", 1)[0] + "/response/set", qos=1)
    client.loop_start()
    try:
        client.publish(topic, json.dumps({"lock": lock, "transaction": transaction, "expires_in": 30}), qos=1)
        assert done.wait(30), f"no final answer to {lock}"
        assert answers[0]["status"] == "succeeded", answers
    finally:
        client.loop_stop()
        client.disconnect()
