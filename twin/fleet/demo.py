"""The fleet service in ``locktwin demo``: its own store under the demo's data folder, two zones
around the simulators' fleets (Amsterdam), its HTTP API and GBFS feed on a free port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from twin.config import MqttSettings
from twin.fleet.service import FleetService
from twin.fleet.settings import FleetSettings, GbfsSettings

__all__ = ["DEMO_ZONES", "demo_fleet"]

DEMO_ZONES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "old-town",
            "properties": {"name": "Old town", "rules": ["no_parking"], "maximum_speed_kph": 15},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[4.885, 52.365], [4.905, 52.365], [4.905, 52.378], [4.885, 52.378], [4.885, 52.365]]],
            },
        },
        {
            "type": "Feature",
            "id": "central-station",
            "properties": {"name": "Central station", "rules": ["no_ride"]},
            "geometry": {"type": "Point", "coordinates": [4.9003, 52.3789], "radius_m": 150},
        },
    ],
}


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_fleet(mqtt: MqttSettings, data_dir: Path) -> FleetService:
    """The demo's fleet service (not started): port 8090 when free, else any."""
    zones = data_dir / "fleet" / "zones.geojson"
    if not zones.exists():
        zones.parent.mkdir(parents=True, exist_ok=True)
        zones.write_text(json.dumps(DEMO_ZONES, indent=2))
    settings = FleetSettings(
        http_port=_port(8090),
        zones_file=zones,
        settle_quiet=0.5,
        gbfs=GbfsSettings(system_id="locktwin-demo", name="locktwin demo", timezone="Europe/Amsterdam"),
    )
    return FleetService(settings=settings, mqtt=mqtt, data_dir=data_dir, base_topic="locktwin")
