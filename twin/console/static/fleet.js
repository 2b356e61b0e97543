// What the page knows of the fleet, fed by the server's coalesced stream; the table and the map read it.

export const LOCK_STATES = ["LOCKED", "UNLOCKED", "LOCKING", "UNLOCKING", "JAMMED", "UNKNOWN"];

const SORTERS = {
  id: (a, b) => compareText(a.id, b.id),
  vendor: (a, b) => compareText(a.vendor, b.vendor) || compareText(a.id, b.id),
  lock: (a, b) => compareText(a.lock, b.lock) || compareText(a.id, b.id),
  online: (a, b) => rank(a.online) - rank(b.online) || compareText(a.id, b.id),
  battery: (a, b) => (a.battery ?? 1000) - (b.battery ?? 1000) || compareText(a.id, b.id),
  updated_at: (a, b) => compareText(a.updated_at || "", b.updated_at || "") || compareText(a.id, b.id),
};

function compareText(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function rank(online) {
  return online === false ? 0 : online === null || online === undefined ? 1 : 2;
}

export class Fleet {
  constructor() {
    this.rows = new Map();
    this.bridges = [];
    this.fleet = { present: false, state: null, jobs: [], zones: [] };
    this.link = { connected: false, error: null };
    this.commands = new Map();
    this.filter = { text: "", vendor: "", lock: "", online: "", batteryBelow: null, staleMinutes: null };
    this.sort = { key: "id", dir: 1 };
    this.listeners = new Set();
    this.version = 0;
    this.loaded = false;
    this._cache = null;
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(kinds) {
    this.version += 1;
    for (const listener of this.listeners) listener(new Set(kinds));
  }

  // -- from the stream ----------------------------------------------------------------------------
  snapshot(data) {
    this.rows.clear();
    for (const row of data.rows) this.rows.set(row.id, row);
    this.bridges = data.bridges;
    this.fleet = data.fleet;
    this.link = data.link;
    this.commands.clear();
    for (const command of data.commands) this.commands.set(command.transaction, command);
    this.loaded = true;
    this.emit(["rows", "bridges", "fleet", "link", "commands"]);
  }

  updateRows(rows) {
    for (const row of rows) {
      if (row.removed) this.rows.delete(row.id);
      else this.rows.set(row.id, row);
    }
    this.emit(["rows"]);
  }

  updateCommands(commands) {
    for (const command of commands) this.commands.set(command.transaction, command);
    this.emit(["commands"]);
  }

  set(kind, value) {
    this[kind] = value;
    this.emit([kind]);
  }

  // -- what the table and the map show -------------------------------------------------------
  setFilter(change) {
    Object.assign(this.filter, change);
    this.filterVersion = (this.filterVersion || 0) + 1;
    this.emit(["filter"]);
  }

  setSort(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.emit(["filter"]);
  }

  vendors() {
    return [...new Set([...this.rows.values()].map((r) => r.vendor))].sort();
  }

  hasShards() {
    for (const row of this.rows.values()) if (row.shard) return true;
    return false;
  }

  matches(row, now) {
    const f = this.filter;
    if (f.vendor && row.vendor !== f.vendor) return false;
    if (f.lock && row.lock !== f.lock) return false;
    if (f.online === "online" && row.online !== true) return false;
    if (f.online === "offline" && row.online !== false) return false;
    if (f.online === "unknown" && (row.online === true || row.online === false)) return false;
    if (f.batteryBelow !== null && !(row.battery !== null && row.battery !== undefined && row.battery < f.batteryBelow)) {
      return false;
    }
    if (f.staleMinutes !== null) {
      const at = row.updated_at ? Date.parse(row.updated_at) : 0;
      if (now - at < f.staleMinutes * 60000) return false;
    }
    if (f.text) {
      const text = f.text.toLowerCase();
      const hay = `${row.id} ${row.name || ""} ${row.model || ""}`.toLowerCase();
      if (!hay.includes(text)) return false;
    }
    return true;
  }

  // The filtered and sorted rows, computed once per change.
  view() {
    if (this._cache && this._cache.version === this.version) return this._cache.rows;
    const now = Date.now();
    const rows = [];
    for (const row of this.rows.values()) if (this.matches(row, now)) rows.push(row);
    const sorter = SORTERS[this.sort.key] || SORTERS.id;
    const dir = this.sort.dir;
    rows.sort((a, b) => dir * sorter(a, b));
    this._cache = { version: this.version, rows };
    return rows;
  }

  commandsFor(target) {
    return [...this.commands.values()].filter((c) => c.target === target);
  }
}
