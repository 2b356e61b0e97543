"""The live index of every device the fleet service follows, fed from the retained MQTT topics.

One :class:`DeviceRecord` per ``vendor/device`` holds what queries, jobs, zones and the GBFS feed
need from the device's ``state`` and ``twin``, and a few secondary structures keep queries off full
scans: sets per vendor, lock state, connectivity, zone, held and pending; sorted lists (value, key)
for ``battery`` and the time of the last report; and every key in order for the default sort.
Nothing here does I/O: each ``apply_*`` returns what changed (a lock state, a position, zones
entered and left, the device's command) for the service to act on.

sortedcontainers' ``SortedList`` keeps the ordered structures: a list of sorted lists, so an update
costs O(log n) and a few small memmoves; a plain ``bisect.insort`` on one list of 100,000 devices
moves the whole list on every battery report, and a tree written here would be that library again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from contracts.messages import CommandStatus, LockState
from twin.fleet.geo import Area, BoundingBox

__all__ = ["Change", "CommandView", "DeviceRecord", "FleetIndex", "device_key"]

_LOCKS = frozenset(s.value for s in LockState)
_PENDING = frozenset({CommandStatus.ACCEPTED.value, CommandStatus.SENT.value, CommandStatus.ACKNOWLEDGED.value})
#: state keys held as attributes of the record (the rest of its scalars go to ``values``)
CORE_KEYS = frozenset({"lock", "online", "battery", "latitude", "longitude", "updated_at"})
_NO_ZONES: frozenset[str] = frozenset()
#: degrees of a cell of the position grid (about 1.1 km of latitude)
CELL = 0.01


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return int(lat // CELL), int(lon // CELL)


def device_key(vendor: str, device: str) -> str:
    return f"{vendor}/{device}"


def _epoch(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


def _number(raw: Any) -> float | None:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None


@dataclass(frozen=True, slots=True)
class CommandView:
    """The device's current or last command, from its twin."""

    transaction: str | None
    kind: str
    name: str
    value: Any
    status: str
    error: Mapping[str, Any] | None

    @property
    def pending(self) -> bool:
        return self.status in _PENDING


@dataclass(slots=True)
class DeviceRecord:
    key: str
    vendor: str
    device: str
    lock: str = LockState.UNKNOWN.value
    online: bool | None = None
    battery: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    updated_at: float | None = None
    held: bool = False
    command: CommandView | None = None
    zones: frozenset[str] = _NO_ZONES
    model: str | None = None
    capabilities: frozenset[str] = _NO_ZONES
    values: dict[str, Any] = field(default_factory=dict)
    has_state: bool = False

    @property
    def pending(self) -> bool:
        return self.command is not None and self.command.pending

    def value(self, name: str) -> Any:
        """A state value by name (core fields included)."""
        if name in CORE_KEYS:
            return self.updated_at if name == "updated_at" else getattr(self, name)
        return self.values.get(name)


@dataclass(frozen=True, slots=True)
class Change:
    record: DeviceRecord
    lock_before: str
    moved: bool = False
    entered: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    command_before: CommandView | None = None
    removed: bool = False

    @property
    def lock_changed(self) -> bool:
        return self.lock_before != self.record.lock


class FleetIndex:
    def __init__(self) -> None:
        self.records: dict[str, DeviceRecord] = {}
        self.by_vendor: dict[str, set[str]] = {}
        self.by_lock: dict[str, set[str]] = {}
        self.by_online: dict[bool | None, set[str]] = {True: set(), False: set(), None: set()}
        self.by_zone: dict[str, set[str]] = {}
        self.held: set[str] = set()
        self.pending: set[str] = set()
        #: devices a bridge's device list no longer names (hidden from queries, jobs and GBFS)
        self.unlisted: set[str] = set()
        self.ordered: SortedList = SortedList()
        self.battery: SortedList = SortedList()
        self.reported: SortedList = SortedList()
        #: names of the scalar state values seen so far (query fields), with how many devices have each
        self.value_names: dict[str, int] = {}
        #: devices by the grid cell of their position (near and bbox terms start from the cells)
        self.grid: dict[tuple[int, int], set[str]] = {}
        #: sorted (value, key) of other numeric state values, made when a query first ranges over one
        self.sorted_values: dict[str, SortedList] = {}
        self.areas: dict[str, Area] = {}
        #: (vendor, shard or "") -> whether that bridge says it is online (its retained state)
        self.bridges: dict[tuple[str, str], bool] = {}
        #: (vendor, shard or "") -> page -> device ids of that page of the bridge's device list
        self._lists: dict[tuple[str, str], dict[int, list[str]]] = {}
        self._pages: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self.records)

    # -- records ---------------------------------------------------------------------------------
    def _record(self, vendor: str, device: str) -> DeviceRecord:
        key = device_key(vendor, device)
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = DeviceRecord(key=key, vendor=vendor, device=device)
            self.by_vendor.setdefault(vendor, set()).add(key)
            self.by_lock.setdefault(rec.lock, set()).add(key)
            self.by_online[None].add(key)
            self.ordered.add(key)
        return rec

    def _forget(self, rec: DeviceRecord) -> None:
        key = rec.key
        del self.records[key]
        self.by_vendor[rec.vendor].discard(key)
        self.by_lock[rec.lock].discard(key)
        self.by_online[rec.online].discard(key)
        for zone in rec.zones:
            self.by_zone[zone].discard(key)
        self.held.discard(key)
        self.pending.discard(key)
        self.unlisted.discard(key)
        self.ordered.discard(key)
        if rec.battery is not None:
            self.battery.discard((rec.battery, key))
        if rec.updated_at is not None:
            self.reported.discard((rec.updated_at, key))
        self._regrid(key, rec.latitude, rec.longitude, None, None)
        for name in rec.values:
            self._count_name(name, -1)
        for name, ordered in self.sorted_values.items():
            if (value := _number(rec.values.get(name))) is not None:
                ordered.discard((value, key))

    def sorted_by(self, name: str) -> SortedList:
        """(value, key) of a numeric state value in order, kept from now on (made on first use)."""
        ordered = self.sorted_values.get(name)
        if ordered is None:
            pairs = ((_number(r.values.get(name)), k) for k, r in self.records.items())
            ordered = self.sorted_values[name] = SortedList((v, k) for v, k in pairs if v is not None)
        return ordered

    def _regrid(
        self, key: str, lat: float | None, lon: float | None, new_lat: float | None, new_lon: float | None
    ) -> None:
        if lat is not None and lon is not None:
            cell = _cell(lat, lon)
            members = self.grid.get(cell)
            if members is not None:
                members.discard(key)
                if not members:
                    del self.grid[cell]
        if new_lat is not None and new_lon is not None:
            self.grid.setdefault(_cell(new_lat, new_lon), set()).add(key)

    def within(self, box: BoundingBox) -> set[str]:
        """Devices whose grid cell meets ``box`` (a superset of those inside it)."""
        (south, west), (north, east) = _cell(box.south, box.west), _cell(box.north, box.east)
        found: set[str] = set()
        if (north - south + 1) * (east - west + 1) <= len(self.grid):
            for row in range(south, north + 1):
                for column in range(west, east + 1):
                    found.update(self.grid.get((row, column), ()))
        else:  # a box larger than the occupied cells: look at those
            for (row, column), members in self.grid.items():
                if south <= row <= north and west <= column <= east:
                    found.update(members)
        return found

    def _count_name(self, name: str, delta: int) -> None:
        count = self.value_names.get(name, 0) + delta
        if count > 0:
            self.value_names[name] = count
        else:
            self.value_names.pop(name, None)

    def apply_state(self, vendor: str, device: str, doc: Mapping[str, Any] | None) -> Change:
        """A retained ``state`` (None: its retained message was deleted)."""
        if doc is None:
            rec = self.records.get(device_key(vendor, device))
            if rec is None:
                return Change(
                    record=DeviceRecord(key=device_key(vendor, device), vendor=vendor, device=device),
                    lock_before=LockState.UNKNOWN.value,
                    removed=True,
                )
            self._forget(rec)
            return Change(record=rec, lock_before=rec.lock, removed=True)
        rec = self._record(vendor, device)
        key = rec.key
        before = rec.lock
        lock = doc.get("lock")
        lock = lock if isinstance(lock, str) and lock in _LOCKS else LockState.UNKNOWN.value
        if lock != before:
            self.by_lock[before].discard(key)
            self.by_lock.setdefault(lock, set()).add(key)
            rec.lock = lock
        online = doc.get("online")
        online = online if isinstance(online, bool) else None
        if online != rec.online:
            self.by_online[rec.online].discard(key)
            self.by_online[online].add(key)
            rec.online = online
        battery = _number(doc.get("battery"))
        if battery != rec.battery:
            if rec.battery is not None:
                self.battery.discard((rec.battery, key))
            if battery is not None:
                self.battery.add((battery, key))
            rec.battery = battery
        updated = _epoch(doc.get("updated_at"))
        if updated != rec.updated_at:
            if rec.updated_at is not None:
                self.reported.discard((rec.updated_at, key))
            if updated is not None:
                self.reported.add((updated, key))
            rec.updated_at = updated
        values = {k: v for k, v in doc.items() if k not in CORE_KEYS and isinstance(v, str | int | float | bool)}
        for name, ordered in self.sorted_values.items():
            old, new = _number(rec.values.get(name)), _number(values.get(name))
            if old != new:
                if old is not None:
                    ordered.discard((old, key))
                if new is not None:
                    ordered.add((new, key))
        if values.keys() != rec.values.keys():
            for name in rec.values.keys() - values.keys():
                self._count_name(name, -1)
            for name in values.keys() - rec.values.keys():
                self._count_name(name, 1)
        rec.values = values
        rec.has_state = True
        lat, lon = _number(doc.get("latitude")), _number(doc.get("longitude"))
        moved = (lat, lon) != (rec.latitude, rec.longitude)
        entered: tuple[str, ...] = ()
        left: tuple[str, ...] = ()
        if moved:
            self._regrid(key, rec.latitude, rec.longitude, lat, lon)
            rec.latitude, rec.longitude = lat, lon
            entered, left = self._relocate(rec)
        return Change(
            record=rec, lock_before=before, moved=moved, entered=entered, left=left, command_before=rec.command
        )

    def apply_twin(self, vendor: str, device: str, doc: Mapping[str, Any] | None) -> Change:
        """A retained ``twin``: its ``command`` (pending or not) and ``hold``."""
        rec = self._record(vendor, device)
        before = rec.command
        held = isinstance(doc, Mapping) and doc.get("hold") == LockState.LOCKED.value
        if held != rec.held:
            (self.held.add if held else self.held.discard)(rec.key)
            rec.held = held
        raw = doc.get("command") if isinstance(doc, Mapping) else None
        command = None
        if isinstance(raw, Mapping) and isinstance(raw.get("status"), str) and isinstance(raw.get("name"), str):
            error = raw.get("error")
            command = CommandView(
                transaction=raw.get("transaction") if isinstance(raw.get("transaction"), str) else None,
                kind=str(raw.get("kind", "set")),
                name=raw["name"],
                value=raw.get("value"),
                status=raw["status"],
                error=error if isinstance(error, Mapping) else None,
            )
        rec.command = command
        (self.pending.add if rec.pending else self.pending.discard)(rec.key)
        return Change(record=rec, lock_before=rec.lock, command_before=before)

    # -- device lists ----------------------------------------------------------------------------
    def apply_device_list(
        self, vendor: str, shard: str, page: int, pages: int, entries: Iterable[Mapping[str, Any]]
    ) -> None:
        """One page of a bridge's (or a shard's) retained device list."""
        source = (vendor, shard)
        book = self._lists.setdefault(source, {})
        ids = []
        for entry in entries:
            device = entry.get("id")
            if not isinstance(device, str):
                continue
            ids.append(device)
            rec = self._record(vendor, device)
            model = entry.get("model")
            rec.model = model if isinstance(model, str) else None
            caps = entry.get("capabilities")
            desired = entry.get("desired_fields")
            actions = entry.get("actions")
            names = [*(caps or []), *(f"set:{d}" for d in desired or []), *(f"action:{a}" for a in actions or [])]
            rec.capabilities = frozenset(n for n in names if isinstance(n, str))
        book[page] = ids
        if page == 0:
            self._pages[source] = pages
            for extra in [p for p in book if p >= pages]:
                del book[extra]
        self._relist(vendor)

    def apply_bridge_state(self, vendor: str, shard: str, payload: bytes) -> None:
        """A bridge's (or shard's) retained ``online`` / ``offline``."""
        if payload in (b"online", b"offline"):
            self.bridges[(vendor, shard)] = payload == b"online"
        else:
            self.bridges.pop((vendor, shard), None)

    def vendor_live(self, vendor: str) -> bool:
        """Every bridge process of the vendor is online: its devices' states are being followed."""
        states = [up for (v, _), up in self.bridges.items() if v == vendor]
        return bool(states) and all(states)

    def clear_device_list(self, vendor: str, shard: str) -> None:
        self._lists.pop((vendor, shard), None)
        self._pages.pop((vendor, shard), None)
        self._relist(vendor)

    def _relist(self, vendor: str) -> None:
        sources = [s for s in self._lists if s[0] == vendor]
        listed: set[str] = set()
        for source in sources:
            for ids in self._lists[source].values():
                listed.update(device_key(vendor, d) for d in ids)
        for key in self.by_vendor.get(vendor, ()):
            if not sources or key in listed:
                self.unlisted.discard(key)
            else:
                self.unlisted.add(key)

    # -- zones -----------------------------------------------------------------------------------
    def put_area(self, zone: str, area: Area) -> list[tuple[DeviceRecord, bool]]:
        """Add or replace a zone; (record, entered) for every device whose membership changed."""
        self.areas[zone] = area
        return self._rezone(zone)

    def remove_area(self, zone: str) -> list[tuple[DeviceRecord, bool]]:
        self.areas.pop(zone, None)
        changes = self._rezone(zone)
        self.by_zone.pop(zone, None)
        return changes

    def _rezone(self, zone: str) -> list[tuple[DeviceRecord, bool]]:
        area = self.areas.get(zone)
        members = self.by_zone.setdefault(zone, set())
        changes = []
        for rec in self.records.values():
            inside = (
                area is not None
                and rec.latitude is not None
                and rec.longitude is not None
                and area.contains(rec.longitude, rec.latitude)
            )
            if inside != (zone in rec.zones):
                rec.zones = rec.zones | {zone} if inside else rec.zones - {zone}
                (members.add if inside else members.discard)(rec.key)
                changes.append((rec, inside))
        return changes

    def _relocate(self, rec: DeviceRecord) -> tuple[tuple[str, ...], tuple[str, ...]]:
        lat, lon = rec.latitude, rec.longitude
        now = _NO_ZONES
        if lat is not None and lon is not None and self.areas:
            now = frozenset(z for z, a in self.areas.items() if a.contains(lon, lat))
        if now == rec.zones:
            return (), ()
        entered, left = tuple(sorted(now - rec.zones)), tuple(sorted(rec.zones - now))
        for zone in entered:
            self.by_zone.setdefault(zone, set()).add(rec.key)
        for zone in left:
            self.by_zone[zone].discard(rec.key)
        rec.zones = now
        return entered, left
