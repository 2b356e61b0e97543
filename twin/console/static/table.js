// The fleet table: filters, sortable columns, and only the visible rows in the DOM (10,000 devices scroll
// as fast as 10). The table keeps its header and its row count for screen readers (aria-rowcount/rowindex).

import { Keyed, ago, batteryText, clear, h, lockBadge, onlineText, reconcile } from "./dom.js";
import { LOCK_STATES } from "./fleet.js";

const ROW_HEIGHT = 40;
const OVERSCAN = 8;
const COLUMNS = [
  { key: "id", label: "Device" },
  { key: "vendor", label: "Vendor" },
  { key: "lock", label: "Lock" },
  { key: "online", label: "Online" },
  { key: "battery", label: "Battery" },
  { key: "updated_at", label: "Last report" },
];

export class FleetTable {
  constructor(root, fleet) {
    this.root = root;
    this.fleet = fleet;
    this.pending = false;
    this.rowNodes = new Keyed();
    this.headSignature = "";
    this.top = h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", {}));
    this.bottom = h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", {}));
    this.build();
    fleet.on((kinds) => {
      if (kinds.has("rows") || kinds.has("filter")) this.schedule();
    });
    setInterval(() => this.schedule(), 30000); // "2 min ago" moves on
  }

  build() {
    const f = this.fleet.filter;
    this.vendorSelect = h("select", { id: "filter-vendor", onchange: (e) => this.fleet.setFilter({ vendor: e.target.value }) },
      h("option", { value: "" }, "all vendors"));
    const lockSelect = h("select", { id: "filter-lock", onchange: (e) => this.fleet.setFilter({ lock: e.target.value }) },
      h("option", { value: "" }, "any lock state"), LOCK_STATES.map((s) => h("option", { value: s }, s)));
    const onlineSelect = h("select", { id: "filter-online", onchange: (e) => this.fleet.setFilter({ online: e.target.value }) },
      h("option", { value: "" }, "online or not"), h("option", { value: "online" }, "online"),
      h("option", { value: "offline" }, "offline"), h("option", { value: "unknown" }, "unknown"));
    const battery = h("input", {
      id: "filter-battery", type: "number", min: 1, max: 101, step: 1, inputmode: "numeric", placeholder: "%",
      oninput: (e) => this.fleet.setFilter({ batteryBelow: e.target.value === "" ? null : Number(e.target.value) }),
    });
    const stale = h("select", { id: "filter-stale", onchange: (e) => this.fleet.setFilter({ staleMinutes: e.target.value === "" ? null : Number(e.target.value) }) },
      h("option", { value: "" }, "any time"), h("option", { value: "5" }, "over 5 min ago"),
      h("option", { value: "60" }, "over 1 h ago"), h("option", { value: "1440" }, "over 1 day ago"));
    const search = h("input", {
      id: "filter-text", type: "search", placeholder: "id, name or model", value: f.text, autocomplete: "off",
      oninput: (e) => this.fleet.setFilter({ text: e.target.value.trim() }),
    });
    const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter devices", onsubmit: (e) => e.preventDefault() },
      field("filter-text", "Search", search), field("filter-vendor", "Vendor", this.vendorSelect),
      field("filter-lock", "Lock", lockSelect), field("filter-online", "Online", onlineSelect),
      field("filter-battery", "Battery below", battery), field("filter-stale", "Last report", stale));
    this.count = h("p", { class: "count-line", id: "fleet-count", "aria-live": "polite" }, "waiting for the fleet…");
    this.headRow = h("tr", { "aria-rowindex": 1 });
    this.body = h("tbody");
    this.table = h("table", { class: "fleet-table", id: "fleet-table", "aria-labelledby": "fleet-count", "aria-rowcount": 1 },
      h("thead", {}, this.headRow), this.body);
    this.scroller = h("div", { class: "table-scroll", tabindex: 0, "aria-label": "Devices, scrollable" }, this.table);
    this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    clear(this.root, filters, this.count, this.scroller);
    new ResizeObserver(() => this.schedule()).observe(this.scroller);
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  renderHead(shards) {
    const columns = shards ? [...COLUMNS, { key: "shard", label: "Shard" }] : COLUMNS;
    const { key, dir } = this.fleet.sort;
    const signature = `${key} ${dir} ${shards}`;
    if (signature === this.headSignature) return columns.length;
    this.headSignature = signature;
    clear(this.headRow, ...columns.map((c) => {
      const sorted = c.key === key ? (dir > 0 ? "ascending" : "descending") : "none";
      const content = c.key === "shard" ? c.label : h("button", { type: "button", class: "sort", onclick: () => this.fleet.setSort(c.key) },
        c.label, h("span", { "aria-hidden": "true", class: "arrow" }, sorted === "ascending" ? " ▲" : sorted === "descending" ? " ▼" : ""));
      return h("th", { scope: "col", "aria-sort": sorted, class: `col-${c.key}` }, content);
    }));
    return columns.length;
  }

  render() {
    const rows = this.fleet.view();
    const vendors = this.fleet.vendors();
    if (this.vendorSelect.options.length !== vendors.length + 1) {
      const chosen = this.fleet.filter.vendor;
      clear(this.vendorSelect, h("option", { value: "" }, "all vendors"),
        ...vendors.map((v) => h("option", { value: v, selected: v === chosen }, v)));
    }
    const shards = this.fleet.hasShards();
    const width = this.renderHead(shards);
    const total = this.fleet.rows.size;
    this.count.textContent = this.fleet.loaded
      ? `${rows.length.toLocaleString()} of ${total.toLocaleString()} devices`
      : "waiting for the fleet…";
    this.table.setAttribute("aria-rowcount", String(rows.length + 1));
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, first + Math.ceil(height / ROW_HEIGHT) + 2 * OVERSCAN);
    const now = Date.now();
    for (const spacer of [this.top, this.bottom]) spacer.firstChild.setAttribute("colspan", width);
    this.top.style.height = `${first * ROW_HEIGHT}px`;
    this.bottom.style.height = `${(rows.length - last) * ROW_HEIGHT}px`;
    const visible = [];
    for (let i = first; i < last; i++) {
      const row = rows[i];
      const since = row.reported ? ago(row.updated_at, now) : "no report yet";
      const signature = JSON.stringify([row, since, shards]);
      const tr = this.rowNodes.get(row.id, signature, () => this.renderRow(row, shards, since));
      tr.setAttribute("aria-rowindex", String(i + 2));
      visible.push(tr);
    }
    this.rowNodes.sweep();
    if (this.fleet.loaded && rows.length === 0) {
      const message = total ? "No device matches these filters." : "No device yet: is a bridge running?";
      reconcile(this.body, [h("tr", {}, h("td", { colspan: width, class: "empty" }, message))]);
    } else {
      reconcile(this.body, [this.top, ...visible, this.bottom]);
    }
  }

  renderRow(row, shards, since) {
    const label = row.name ? h("span", { class: "sub" }, row.name) : row.model ? h("span", { class: "sub" }, row.model) : null;
    const battery = row.battery === null || row.battery === undefined ? "" : [
      h("span", { class: "battery-bar", "aria-hidden": "true" }, h("span", { class: row.battery < 20 ? "low" : "" })),
      batteryText(row.battery),
    ];
    const tr = h("tr", { class: row.online === false ? "offline" : "", dataset: { id: row.id } },
      h("td", { class: "col-id" }, h("a", { href: `#/device/${encodeURI(row.id)}` }, row.device), label),
      h("td", { class: "col-vendor" }, row.vendor),
      h("td", { class: "col-lock" }, lockBadge(row.lock, row.online)),
      h("td", { class: `col-online ${onlineText(row.online)}` }, onlineText(row.online)),
      h("td", { class: "col-battery" }, battery),
      h("td", { class: "col-updated_at", title: row.updated_at || "" }, since),
      shards ? h("td", { class: "col-shard" }, row.shard || "") : null);
    const bar = tr.querySelector(".battery-bar > span");
    if (bar) bar.style.width = `${Math.max(0, Math.min(100, row.battery))}%`;
    return tr;
  }
}

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}
