// Small DOM helpers. Text always goes in as text (never as HTML): device names come from vendors.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Empty `el`, then append `children` (skipping null, undefined and false, unlike Element.append).
export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function announce(text) {
  const region = document.getElementById("toasts");
  const item = h("div", { class: "toast" }, text);
  region.append(item);
  setTimeout(() => item.remove(), 8000);
  while (region.childElementCount > 4) region.firstElementChild.remove();
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function short(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") {
    const text = JSON.stringify(value);
    return text.length > 80 ? text.slice(0, 77) + "…" : text;
  }
  return String(value);
}

export function onlineText(online) {
  return online === true ? "online" : online === false ? "offline" : "unknown";
}

export function batteryText(battery) {
  return battery === null || battery === undefined ? "" : `${Math.round(battery)} %`;
}

export function lockBadge(lock, online) {
  const state = lock || "UNKNOWN";
  return h("span", { class: `lock lock-${state.toLowerCase()}${online === false ? " offline" : ""}` }, state);
}

// Put exactly `nodes` in `parent`, in order, moving only what is out of place: a node that stays is never
// detached, so a click in progress, the focus and an open <details> survive a live update.
export function reconcile(parent, nodes) {
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextSibling;
      continue;
    }
    parent.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

// Nodes built once per key and rebuilt only when their signature changes.
export class Keyed {
  constructor() {
    this.nodes = new Map();
    this.used = new Set();
  }

  get(key, signature, build) {
    this.used.add(key);
    const known = this.nodes.get(key);
    if (known && known.signature === signature) return known.node;
    const node = build();
    this.nodes.set(key, { signature, node });
    return node;
  }

  // Forget the nodes not asked for since the last sweep.
  sweep() {
    for (const key of this.nodes.keys()) if (!this.used.has(key)) this.nodes.delete(key);
    this.used.clear();
  }
}
