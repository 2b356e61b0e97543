// The console page: session, the fleet stream, the router (#/, #/device/<vendor>/<device>, #/jobs), the header.

import { loadSession, stream } from "./api.js";
import { isFinal, outcome } from "./commands.js";
import { DevicePage } from "./device.js";
import { announce, clear, h } from "./dom.js";
import { Fleet } from "./fleet.js";
import { JobsView, activeJobs } from "./jobs.js";
import { FleetMap } from "./map.js";
import { FleetTable } from "./table.js";

const fleet = new Fleet();
let devicePage = null;
const seenFinal = new Set();

function confirmDialog(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

function renderBridges() {
  const list = document.getElementById("bridges");
  clear(list, ...fleet.bridges.map((b) => h("li", { class: `bridge ${b.state === "online" ? "up" : "down"}` },
    h("span", { class: "dot", "aria-hidden": "true" }), `${b.id} ${b.state}`)));
}

function renderFleetNav() {
  const nav = document.getElementById("nav-jobs");
  nav.hidden = !fleet.fleet.present;
  const active = activeJobs(fleet);
  document.getElementById("jobs-count").textContent = active ? String(active) : "";
  if (!fleet.fleet.present && location.hash.startsWith("#/jobs")) route();
}

function renderLink() {
  const banner = document.getElementById("banner");
  const { connected, error } = fleet.link;
  banner.hidden = connected && !error;
  banner.textContent = connected ? "" : error || "connecting to the broker…";
}

function toastFinals(kinds) {
  if (!kinds.has("commands")) return;
  for (const command of fleet.commands.values()) {
    if (!isFinal(command) || seenFinal.has(command.transaction)) continue;
    seenFinal.add(command.transaction);
    announce(`${command.target} ${command.summary}: ${outcome(command)}`);
  }
}

function route() {
  const hash = decodeURI(location.hash || "#/");
  const views = { fleet: document.getElementById("view-fleet"), device: document.getElementById("view-device"),
    jobs: document.getElementById("view-jobs") };
  if (devicePage) {
    devicePage.close();
    devicePage = null;
  }
  let shown = "fleet";
  if (hash.startsWith("#/device/")) {
    shown = "device";
    devicePage = new DevicePage(views.device, hash.slice("#/device/".length), { confirm: confirmDialog });
  } else if (hash.startsWith("#/jobs") && fleet.fleet.present) {
    shown = "jobs";
  }
  for (const [name, el] of Object.entries(views)) el.hidden = name !== shown;
  for (const link of document.querySelectorAll(".views a")) {
    if (link.dataset.view === shown) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = shown === "device" ? `${hash.slice(9)} · locktwin console` : "locktwin console";
}

function setupPanes() {
  const buttons = document.querySelectorAll(".switch button");
  const view = document.getElementById("view-fleet");
  for (const button of buttons) {
    button.addEventListener("click", () => {
      for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
      view.dataset.pane = button.dataset.pane;
    });
  }
  view.dataset.pane = "list";
}

async function main() {
  const session = await loadSession();
  if (!session) return;
  document.getElementById("who").textContent = session.user;
  document.getElementById("logout-csrf").value = session.csrf;
  const ended = sessionStorage.getItem("locktwin-ended");
  if (ended) sessionStorage.removeItem("locktwin-ended");
  setupPanes();
  new FleetTable(document.getElementById("list-pane"), fleet);
  new FleetMap(document.getElementById("map-pane"), fleet, {
    tileUrl: session.tile_url, attribution: session.tile_attribution,
    onOpen: (id) => { location.hash = `#/device/${encodeURI(id)}`; },
  });
  new JobsView(document.getElementById("view-jobs"), fleet, { confirm: confirmDialog });
  fleet.on((kinds) => {
    if (kinds.has("bridges")) renderBridges();
    if (kinds.has("fleet")) renderFleetNav();
    if (kinds.has("link")) renderLink();
    toastFinals(kinds);
  });
  stream("/api/stream", {
    snapshot: (d) => {
      for (const c of d.commands) if (isFinal(c)) seenFinal.add(c.transaction);
      fleet.snapshot(d);
    },
    rows: (rows) => fleet.updateRows(rows),
    bridges: (list) => fleet.set("bridges", list),
    fleet: (part) => fleet.set("fleet", part),
    link: (link) => fleet.set("link", link),
    commands: (list) => fleet.updateCommands(list),
  });
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
}

main();
