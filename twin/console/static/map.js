// The map: devices by position on a Web Mercator projection drawn here in SVG (no library, no network),
// coloured by lock state, offline greyed, clustered on a screen grid when dense, the fleet service's
// zones as outlines, and XYZ tiles underneath only when a tile URL is configured.

import { Keyed, clear, h, reconcile, s } from "./dom.js";

const TILE = 256;
const MIN_Z = 1;
const MAX_Z = 19;
const CELL = 48; // px: devices closer than a cell share a cluster
const EARTH = 40075016.686; // m, the equator
const STEPS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30];

export function project(lon, lat) {
  const sin = Math.sin((Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)];
}

function latitudeOf(y) {
  return (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI;
}

export class FleetMap {
  constructor(root, fleet, { tileUrl = null, attribution = "", onOpen }) {
    this.root = root;
    this.fleet = fleet;
    this.tileUrl = tileUrl;
    this.onOpen = onOpen;
    this.view = { x: 0.5, y: 0.5, z: MIN_Z };
    this.moved = false; // once the person pans or zooms, new devices no longer refit the view
    this.fittedFor = ""; // what the view was last fitted to: devices, filter, size
    this.pending = false;
    this.drag = null;
    this.members = new WeakMap(); // cluster element -> its rows
    this.nodes = new Keyed(); // markers and clusters, kept while unchanged so focus and clicks survive updates
    this.build(attribution);
    fleet.on((kinds) => {
      if (kinds.has("filter")) this.moved = false; // another set of devices: show all of them
      if (kinds.has("rows") || kinds.has("filter") || kinds.has("fleet")) this.schedule();
    });
  }

  build(attribution) {
    this.layers = { tiles: s("g", { class: "tiles" }), grid: s("g", { class: "grid" }), zones: s("g", { class: "zones" }),
      markers: s("g", { class: "markers" }) };
    this.summary = h("p", { class: "map-summary", id: "map-summary", "aria-live": "polite" }, "");
    this.svg = s("svg", { class: "map-svg", role: "group", tabindex: 0, "aria-labelledby": "map-summary",
      "aria-describedby": "map-help" }, this.layers.tiles, this.layers.grid, this.layers.zones, this.layers.markers);
    const button = (label, text, action) => h("button", { type: "button", "aria-label": label, title: label, onclick: action }, text);
    const controls = h("div", { class: "map-controls" },
      button("Zoom in", "+", () => this.zoomBy(1)), button("Zoom out", "−", () => this.zoomBy(-1)),
      button("Show every device", "⤢", () => { this.moved = false; this.fit(); }));
    this.popover = h("div", { class: "popover", hidden: true, role: "dialog", "aria-label": "Devices here" });
    const help = h("p", { id: "map-help", class: "visually-hidden" },
      "Arrow keys move the map, plus and minus zoom, Tab reaches each marker, Enter opens it. The table lists the same devices.");
    const credit = attribution && this.tileUrl ? h("p", { class: "attribution" }, attribution) : null;
    const frame = h("div", { class: "map" }, this.svg, controls, this.popover, credit);
    const key = (cls, text) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
    const legend = h("ul", { class: "legend", "aria-label": "Map colours" }, key("lock-locked", "locked"),
      key("lock-unlocked", "unlocked"), key("lock-locking", "moving"), key("lock-jammed", "jammed"),
      key("lock-unknown", "unknown"), key("offline", "offline"),
      h("li", { class: "sub" }, "a cluster takes the colour of its most urgent device"));
    clear(this.root, frame, this.summary, legend, help);
    this.frame = frame;
    this.svg.addEventListener("pointerdown", (e) => this.pointerDown(e));
    this.svg.addEventListener("pointermove", (e) => this.pointerMove(e));
    this.svg.addEventListener("pointerup", (e) => this.pointerUp(e));
    this.svg.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    this.svg.addEventListener("keydown", (e) => this.key(e));
    new ResizeObserver(() => this.schedule()).observe(frame);
  }

  get size() {
    return { w: this.frame.clientWidth, h: this.frame.clientHeight };
  }

  get scale() {
    return TILE * 2 ** this.view.z;
  }

  toScreen([x, y]) {
    const { w, h: height } = this.size;
    return [(x - this.view.x) * this.scale + w / 2, (y - this.view.y) * this.scale + height / 2];
  }

  toWorld(px, py) {
    const { w, h: height } = this.size;
    return [this.view.x + (px - w / 2) / this.scale, this.view.y + (py - height / 2) / this.scale];
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  positioned() {
    return this.fleet.view().filter((r) => r.latitude !== null && r.latitude !== undefined && r.longitude !== null && r.longitude !== undefined);
  }

  fit() {
    const points = this.positioned().map((r) => project(r.longitude, r.latitude));
    for (const zone of this.fleet.fleet.zones || []) points.push(...zoneRings(zone).flat().map(([lon, lat]) => project(lon, lat)));
    if (!points.length) {
      this.view = { x: 0.5, y: 0.5, z: MIN_Z };
    } else {
      const xs = points.map((p) => p[0]);
      const ys = points.map((p) => p[1]);
      const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
      const { w, h: height } = this.size;
      const span = Math.max(x1 - x0, (y1 - y0) * (w / height), 1e-9);
      const z = Math.log2((w - 2 * CELL) / (span * TILE));
      this.view = { x: (x0 + x1) / 2, y: (y0 + y1) / 2, z: Math.max(MIN_Z, Math.min(16, z)) };
    }
    this.schedule();
  }

  zoomBy(delta, anchor = null) {
    const { w, h: height } = this.size;
    const [px, py] = anchor || [w / 2, height / 2];
    const [wx, wy] = this.toWorld(px, py);
    const z = Math.max(MIN_Z, Math.min(MAX_Z, this.view.z + delta));
    this.view.z = z;
    this.view.x = wx - (px - w / 2) / this.scale;
    this.view.y = wy - (py - height / 2) / this.scale;
    this.moved = true;
    this.schedule();
  }

  panBy(dx, dy) {
    this.view.x -= dx / this.scale;
    this.view.y = Math.max(0, Math.min(1, this.view.y - dy / this.scale));
    this.moved = true;
    this.schedule();
  }

  // -- input ----------------------------------------------------------------------------------
  pointerDown(e) {
    this.drag = { x: e.clientX, y: e.clientY, moved: 0 };
    this.svg.setPointerCapture(e.pointerId);
  }

  pointerMove(e) {
    if (!this.drag) return;
    const dx = e.clientX - this.drag.x;
    const dy = e.clientY - this.drag.y;
    this.drag.moved += Math.abs(dx) + Math.abs(dy);
    this.drag.x = e.clientX;
    this.drag.y = e.clientY;
    if (this.drag.moved > 4) this.panBy(dx, dy);
  }

  pointerUp(e) {
    const drag = this.drag;
    this.drag = null;
    if (drag && drag.moved <= 4) {
      const target = document.elementFromPoint(e.clientX, e.clientY)?.closest("[data-kind]");
      if (target) this.activate(target);
      else this.popover.hidden = true;
    }
  }

  wheel(e) {
    e.preventDefault();
    const box = this.svg.getBoundingClientRect();
    this.zoomBy(-e.deltaY * 0.002, [e.clientX - box.left, e.clientY - box.top]);
  }

  key(e) {
    const target = e.target.closest ? e.target.closest("[data-kind]") : null;
    if (target && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      this.activate(target);
      return;
    }
    const moves = { ArrowLeft: [80, 0], ArrowRight: [-80, 0], ArrowUp: [0, 80], ArrowDown: [0, -80] };
    if (moves[e.key]) this.panBy(...moves[e.key]);
    else if (e.key === "+" || e.key === "=") this.zoomBy(1);
    else if (e.key === "-") this.zoomBy(-1);
    else if (e.key === "Escape") this.popover.hidden = true;
    else return;
    e.preventDefault();
  }

  activate(el) {
    if (el.dataset.kind === "marker") {
      this.onOpen(el.dataset.id);
      return;
    }
    const rows = this.members.get(el) || [];
    const points = rows.map((r) => project(r.longitude, r.latitude));
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const spread = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys));
    if (spread * TILE * 2 ** MAX_Z > CELL && this.view.z < MAX_Z) { // they come apart before the deepest zoom
      this.view.x = (Math.min(...xs) + Math.max(...xs)) / 2;
      this.view.y = (Math.min(...ys) + Math.max(...ys)) / 2;
      const { w, h: height } = this.size;
      const z = Math.log2((Math.min(w, height) - 2 * CELL) / Math.max(spread * TILE, 1e-12));
      this.view.z = Math.max(this.view.z + 1, Math.min(MAX_Z, z));
      this.moved = true;
      this.popover.hidden = true;
      this.schedule();
      return;
    }
    this.showList(rows, el);
  }

  showList(rows, el) {
    const close = h("button", { type: "button", class: "quiet", "aria-label": "Close the list", onclick: () => { this.popover.hidden = true; el.focus(); } }, "×");
    const items = rows.slice(0, 50).map((r) => h("li", {}, h("a", { href: `#/device/${encodeURI(r.id)}` }, r.id), ` ${r.lock}`));
    const more = rows.length > 50 ? h("p", {}, `and ${rows.length - 50} more at this spot`) : null;
    clear(this.popover, h("div", { class: "popover-head" }, h("strong", {}, `${rows.length} devices here`), close),
      h("ul", {}, items), more);
    this.popover.hidden = false;
    this.popover.querySelector("a")?.focus();
  }

  // -- drawing --------------------------------------------------------------------------------
  render() {
    const { w, h: height } = this.size;
    if (!w || !height) return; // hidden (the list pane on a phone): drawn when it is shown
    const rows = this.positioned();
    const fitted = `${rows.length} ${this.fleet.filterVersion} ${w}x${height}`;
    if (!this.moved && fitted !== this.fittedFor) {
      this.fittedFor = fitted;
      this.fit();
    }
    this.svg.setAttribute("viewBox", `0 0 ${w} ${height}`);
    this.drawTiles(w, height);
    this.drawGrid(w, height);
    this.drawZones();
    const { markers, clusters } = this.drawDevices(rows, w, height);
    const total = this.fleet.view().length;
    this.summary.textContent = `${rows.length.toLocaleString()} of ${total.toLocaleString()} devices have a position: ` +
      `${markers} markers, ${clusters} clusters`;
  }

  drawDevices(rows, w, height) {
    const cells = new Map();
    const scale = this.scale;
    for (const row of rows) {
      const world = project(row.longitude, row.latitude);
      const [px, py] = this.toScreen(world);
      if (px < -CELL || py < -CELL || px > w + CELL || py > height + CELL) continue;
      // cells of the world at this zoom, not of the screen: panning does not regroup the devices
      const key = `${Math.floor((world[0] * scale) / CELL)},${Math.floor((world[1] * scale) / CELL)}`;
      let cell = cells.get(key);
      if (!cell) cells.set(key, (cell = { rows: [], x: 0, y: 0 }));
      cell.rows.push(row);
      cell.x += px;
      cell.y += py;
    }
    const nodes = [];
    let markers = 0;
    let clusters = 0;
    for (const [key, cell] of cells) {
      const x = cell.x / cell.rows.length;
      const y = cell.y / cell.rows.length;
      let node;
      if (cell.rows.length === 1) {
        markers += 1;
        const row = cell.rows[0];
        node = this.nodes.get(`m ${row.id}`, `${row.lock} ${row.online} ${row.name}`, () => marker(row));
      } else {
        clusters += 1;
        const summary = clusterLabel(cell.rows);
        node = this.nodes.get(`c ${this.view.z} ${key}`, summary.label, () => cluster(cell.rows, summary));
        this.members.set(node, cell.rows);
      }
      node.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
      nodes.push(node);
    }
    this.nodes.sweep();
    reconcile(this.layers.markers, nodes);
    return { markers, clusters };
  }

  drawTiles(w, height) {
    if (!this.tileUrl) return;
    const tz = Math.max(0, Math.min(MAX_Z, Math.round(this.view.z)));
    const n = 2 ** tz;
    const size = TILE * 2 ** (this.view.z - tz);
    const [x0, y0] = this.toWorld(0, 0);
    const [x1, y1] = this.toWorld(w, height);
    const tiles = [];
    for (let ty = Math.max(0, Math.floor(y0 * n)); ty <= Math.min(n - 1, Math.floor(y1 * n)); ty++) {
      for (let tx = Math.floor(x0 * n); tx <= Math.floor(x1 * n) && tiles.length < 200; tx++) {
        const [sx, sy] = this.toScreen([tx / n, ty / n]);
        const wrapped = ((tx % n) + n) % n;
        const href = this.tileUrl.replace("{z}", tz).replace("{x}", wrapped).replace("{y}", ty);
        tiles.push(s("image", { href, x: sx, y: sy, width: size + 0.5, height: size + 0.5, preserveAspectRatio: "none" }));
      }
    }
    this.layers.tiles.replaceChildren(...tiles);
  }

  drawGrid(w, height) {
    const [x0, y0] = this.toWorld(0, 0);
    const [x1, y1] = this.toWorld(w, height);
    const span = (x1 - x0) * 360;
    const step = STEPS.find((st) => span / st <= 8) || 30;
    const lines = [];
    const digits = step < 1 ? Math.ceil(-Math.log10(step)) : 0;
    for (let lon = Math.ceil((x0 * 360 - 180) / step) * step; lon <= x1 * 360 - 180; lon += step) {
      const [sx] = this.toScreen([(lon + 180) / 360, 0]);
      lines.push(s("line", { x1: sx, y1: 0, x2: sx, y2: height }), s("text", { x: sx + 3, y: height - 4 }, `${lon.toFixed(digits)}°`));
    }
    const lat0 = latitudeOf(Math.min(1, y1));
    const lat1 = latitudeOf(Math.max(0, y0));
    for (let lat = Math.ceil(lat0 / step) * step; lat <= lat1; lat += step) {
      const [, sy] = this.toScreen(project(0, lat));
      lines.push(s("line", { x1: 0, y1: sy, x2: w, y2: sy }), s("text", { x: 3, y: sy - 3 }, `${lat.toFixed(digits)}°`));
    }
    this.layers.grid.replaceChildren(...lines);
  }

  drawZones() {
    const nodes = [];
    for (const zone of this.fleet.fleet.zones || []) {
      const geometry = zone.geometry || {};
      const label = zone.name || zone.id;
      if (geometry.type === "Point" && Array.isArray(geometry.coordinates)) {
        const [lon, lat] = geometry.coordinates;
        const radius = Number(geometry.radius_m ?? zone.radius_m ?? 0);
        const [cx, cy] = this.toScreen(project(lon, lat));
        const r = (radius / (EARTH * Math.cos((lat * Math.PI) / 180))) * this.scale;
        nodes.push(s("g", { class: "zone", "data-zone": zone.id }, s("circle", { cx, cy, r: Math.max(r, 3) }),
          s("text", { x: cx, y: cy - Math.max(r, 3) - 4 }, label), s("title", {}, `zone ${label}`)));
        continue;
      }
      const rings = zoneRings(zone);
      if (!rings.length) continue;
      const d = rings.map((ring) => ring.map(([lon, lat], i) => {
        const [x, y] = this.toScreen(project(lon, lat));
        return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      }).join("") + "Z").join("");
      const [lx, ly] = this.toScreen(project(...rings[0][0]));
      nodes.push(s("g", { class: "zone", "data-zone": zone.id }, s("path", { d, "fill-rule": "evenodd" }),
        s("text", { x: lx + 4, y: ly - 4 }, label), s("title", {}, `zone ${label}`)));
    }
    this.layers.zones.replaceChildren(...nodes);
  }
}

function zoneRings(zone) {
  const geometry = zone.geometry || {};
  const valid = (ring) => Array.isArray(ring) && ring.every((p) => Array.isArray(p) && p.length >= 2 && p.every(Number.isFinite));
  if (geometry.type === "Polygon") return (geometry.coordinates || []).filter(valid);
  if (geometry.type === "MultiPolygon") return (geometry.coordinates || []).flat().filter(valid);
  return [];
}

function describe(row) {
  const online = row.online === false ? "offline" : row.online === true ? "online" : "online unknown";
  return `${row.id}${row.name ? ` (${row.name})` : ""}: ${row.lock}, ${online}`;
}

function marker(row) {
  const classes = `device lock-${row.lock.toLowerCase()}${row.online === false ? " offline" : ""}`;
  return s("g", { class: classes, role: "button", tabindex: 0,
    "aria-label": `${describe(row)}. Open the device.`, "data-kind": "marker", "data-id": row.id },
  s("circle", { r: 8 }), s("title", {}, describe(row)));
}

function clusterLabel(rows) {
  const counts = {};
  let offline = 0;
  for (const row of rows) {
    counts[row.lock] = (counts[row.lock] || 0) + 1;
    if (row.online === false) offline += 1;
  }
  const worst = ["JAMMED", "UNLOCKED", "UNLOCKING", "LOCKING", "UNKNOWN", "LOCKED"].find((l) => counts[l]) || "UNKNOWN";
  const parts = Object.entries(counts).map(([lock, n]) => `${n} ${lock.toLowerCase()}`);
  if (offline) parts.push(`${offline} offline`);
  return { label: `${rows.length} devices: ${parts.join(", ")}`, worst, allOffline: offline === rows.length };
}

function cluster(rows, { label, worst, allOffline }) {
  const r = Math.min(26, 12 + Math.log2(rows.length) * 2.5);
  return s("g", { class: `cluster lock-${worst.toLowerCase()}${allOffline ? " offline" : ""}`, role: "button", tabindex: 0,
    "aria-label": `${label}. Zoom in or list them.`, "data-kind": "cluster", "data-count": rows.length },
  s("circle", { r }), s("text", { "text-anchor": "middle", dy: "0.35em" }, rows.length > 999 ? `${Math.round(rows.length / 1000)}k` : rows.length),
  s("title", {}, label));
}
