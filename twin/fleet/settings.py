"""Configuration of the fleet service: the ``[fleet]`` table of ``locktwin.toml``.

Example::

    [fleet]
    http_port = 8090
    zones_file = "/etc/locktwin/zones.geojson"

    [fleet.gbfs]
    system_id = "acme-amsterdam"
    name = "ACME scooters Amsterdam"
    timezone = "Europe/Amsterdam"
    feed_contact_email = "gbfs@acme.example"

    [[fleet.gbfs.vehicle_types]]
    vehicle_type_id = "okai-es400"
    vendor = "okai"
    form_factor = "scooter_standing"
    propulsion_type = "electric"
    max_range_meters = 40000
    name = "OKAI ES400"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FleetSettings", "GbfsSettings", "GbfsVehicleType"]

FormFactor = Literal["bicycle", "cargo_bicycle", "car", "moped", "scooter_standing", "scooter_seated", "other"]
Propulsion = Literal[
    "human",
    "electric_assist",
    "electric",
    "combustion",
    "combustion_diesel",
    "hybrid",
    "plug_in_hybrid",
    "hydrogen_fuel_cell",
]


class GbfsVehicleType(BaseModel):
    """A GBFS vehicle type and the devices it describes (``vendor`` and a glob over their model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vehicle_type_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    vendor: str
    model: str = Field(default="*", description="glob over the device list's model")
    form_factor: FormFactor
    propulsion_type: Propulsion
    max_range_meters: float | None = Field(default=None, gt=0, description="required unless human-powered")
    name: str | None = None
    rider_capacity: int | None = Field(default=None, ge=0)


DEFAULT_VEHICLE_TYPES = (
    GbfsVehicleType(
        vehicle_type_id="segway-ebike",
        vendor="segway",
        model="*",
        form_factor="bicycle",
        propulsion_type="electric_assist",
        max_range_meters=60_000,
        name="Segway e-bike",
        rider_capacity=1,
    ),
    GbfsVehicleType(
        vehicle_type_id="okai-scooter",
        vendor="okai",
        model="*",
        form_factor="scooter_standing",
        propulsion_type="electric",
        max_range_meters=40_000,
        name="OKAI scooter",
        rider_capacity=1,
    ),
)


class GbfsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    vendors: tuple[str, ...] = ("segway", "okai")
    system_id: str = "locktwin"
    name: str = "locktwin fleet"
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")
    timezone: str = "UTC"
    opening_hours: str = "24/7"
    feed_contact_email: str = "fleet-operations@example.com"
    #: seconds consumers may cache a file (vehicle_status.json: ``status_ttl``)
    ttl: int = Field(default=300, ge=0)
    status_ttl: int = Field(default=30, ge=0)
    #: vehicles whose last report is older are left out (GBFS: data at most 5 minutes old)
    max_age: float = Field(default=300.0, gt=0, le=300)
    #: reported values read as current_range_meters, first found wins (else battery x max range)
    range_fields: tuple[str, ...] = ("remaining_range_m", "remaining_distance_m")
    #: a vehicle moved further than this since its vehicle_id was given gets a new one (a ride the
    #: service did not see, e.g. while it was down)
    rotate_after_m: float = Field(default=100.0, gt=0)
    #: absolute base URL of the feed in gbfs.json (default: from the request)
    public_url: str | None = None
    vehicle_types: tuple[GbfsVehicleType, ...] = DEFAULT_VEHICLE_TYPES


class FleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8090, ge=0, le=65535, description="0: a free port")
    client_id: str | None = Field(default=None, description="default: locktwin-fleet")
    zones_file: Path | None = Field(default=None, description="GeoJSON FeatureCollection loaded at start")
    #: seconds without a retained message after subscribing before the index counts as loaded
    #: (jobs wait for it), and the longest that wait lasts
    settle_quiet: float = Field(default=1.0, gt=0)
    settle_max: float = Field(default=30.0, gt=0)
    #: seconds past an execution's timeout to wait for its final answer before TIMED_OUT
    answer_grace: float = Field(default=5.0, ge=0)
    #: the keep-locked rule's lock commands: their expiry, and the pause after one failed
    rule_timeout: float = Field(default=60.0, gt=0, le=86_400)
    rule_retry: float = Field(default=60.0, gt=0)
    #: largest request payload (a job listing its devices); queries and refs are far smaller
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    gbfs: GbfsSettings = GbfsSettings()
