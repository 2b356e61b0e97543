// A device page: its state, lock and unlock (unlock asks first), the twin with each field's times and
// source, the current and recent commands from its events, Tuya cards and lock users, and a form for
// every vendor action it offers. Fed by the device's own event stream.

import { post, stream } from "./api.js";
import { commandItem, errorText, isFinal, outcome } from "./commands.js";
import { actionForm } from "./forms.js";
import { Keyed, ago, announce, batteryText, clear, clock, h, lockBadge, onlineText, reconcile, short } from "./dom.js";

export class DevicePage {
  constructor(root, key, { confirm }) {
    this.root = root;
    this.key = key;
    this.confirm = confirm;
    this.row = null;
    this.meta = {};
    this.twin = null;
    this.events = [];
    this.commands = new Map();
    this.actionsBuilt = null;
    this.commandNodes = new Keyed();
    this.build();
    this.source = stream(`/api/devices/${encodeURI(key)}/stream`, {
      snapshot: (d) => {
        this.row = d.row;
        this.meta = d.meta;
        this.twin = d.twin;
        this.events = d.events;
        for (const c of d.commands) this.commands.set(c.transaction, c);
        this.renderAll();
      },
      row: (d) => { this.row = d.row; this.meta = d.meta; this.renderStatus(); this.renderActions(); },
      twin: (t) => { this.twin = t; this.renderTwin(); this.renderExtras(); },
      events: (list) => { this.events.push(...list); this.events = this.events.slice(-40); this.renderHistory(); },
      commands: (list) => { for (const c of list) this.commands.set(c.transaction, c); this.renderCommands(); this.renderExtras(); },
      link: () => {},
    });
    this.timer = setInterval(() => this.renderCommands(), 2000);
  }

  close() {
    this.source.close();
    clearInterval(this.timer);
  }

  build() {
    const [vendor, ...rest] = this.key.split("/");
    this.title = h("h2", { id: "device-title", tabindex: -1 }, h("span", { class: "sub" }, `${vendor} / `), rest.join("/"));
    this.status = h("div", { class: "status-line", id: "device-status" });
    this.lockButton = h("button", { type: "button", class: "primary", id: "lock-button", onclick: () => this.setLock("LOCKED") }, "Lock");
    this.unlockButton = h("button", { type: "button", class: "danger", id: "unlock-button", onclick: () => this.setLock("UNLOCKED") }, "Unlock");
    this.noLock = h("p", { class: "sub", hidden: true }, "This device has no lock to set.");
    this.buttons = h("div", { class: "command-buttons" }, this.lockButton, this.unlockButton,
      h("button", { type: "button", class: "quiet", id: "refresh-button", onclick: () => this.send("get", {}) }, "Refresh from vendor"),
      this.noLock);
    this.usersButton = h("button", { type: "button", id: "load-users", onclick: () => this.send("request", { arguments: {} }, "list_users") }, "Load lock users");
    this.usersBox = h("div", {});
    this.usersCard = h("section", { class: "card", "aria-labelledby": "h-users", hidden: true }, h("h3", { id: "h-users" }, "Lock users"),
      this.usersButton, this.usersBox);
    this.cardsCard = h("section", { class: "card", "aria-labelledby": "h-cards", hidden: true });
    this.commandList = h("ol", { class: "commands", id: "device-commands", "aria-live": "polite" });
    this.twinBox = h("div", { id: "device-twin" });
    this.current = h("div", { id: "device-current" });
    this.history = h("div", { id: "device-history" });
    this.extras = h("div", { id: "device-extras", class: "extras-wrap" }, this.cardsCard, this.usersCard);
    this.actions = h("div", { id: "device-actions" });
    const card = (title, id, ...content) => h("section", { class: "card", "aria-labelledby": id }, h("h3", { id }, title), ...content);
    clear(this.root, 
      h("p", {}, h("a", { href: "#/", class: "back" }, "← Fleet")),
      h("header", { class: "device-head" }, this.title, this.status),
      h("div", { class: "device-grid" },
        card("Commands", "h-commands", this.buttons, h("h4", {}, "Your commands"), this.commandList),
        h("section", { class: "card wide", "aria-labelledby": "h-twin" }, h("h3", { id: "h-twin" }, "Twin"), this.twinBox),
        card("Commands on this device", "h-current", this.current, this.history),
        this.extras,
        card("Vendor actions", "h-actions", this.actions)));
    this.title.focus();
  }

  renderAll() {
    this.renderStatus();
    this.renderCommands();
    this.renderTwin();
    this.renderHistory();
    this.renderExtras();
    this.renderActions();
  }

  renderStatus() {
    const row = this.row;
    if (!row) {
      clear(this.status, h("p", { class: "empty" }, "This device is not in any bridge's device list (yet)."));
      return;
    }
    const name = row.name || row.model;
    clear(this.status, 
      name ? h("p", { class: "sub" }, name) : null,
      h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "Lock"), h("dd", { id: "device-lock" }, lockBadge(row.lock, row.online))),
        h("div", {}, h("dt", {}, "Online"), h("dd", {}, onlineText(row.online))),
        h("div", {}, h("dt", {}, "Battery"), h("dd", {}, batteryText(row.battery) || "—")),
        h("div", {}, h("dt", {}, "Last report"), h("dd", { title: row.updated_at || "" }, row.reported ? ago(row.updated_at) : "none yet")),
        row.latitude !== null && row.latitude !== undefined
          ? h("div", {}, h("dt", {}, "Position"), h("dd", {}, `${row.latitude.toFixed(5)}, ${row.longitude.toFixed(5)}`)) : null,
        row.shard ? h("div", {}, h("dt", {}, "Shard"), h("dd", {}, row.shard)) : null));
    const canLock = (this.meta.desired_fields || []).includes("lock");
    this.lockButton.disabled = !canLock;
    this.unlockButton.disabled = !canLock;
    this.noLock.hidden = canLock;
  }

  async setLock(value) {
    if (value === "UNLOCKED") {
      const ok = await this.confirm(`Unlock ${this.key}?`,
        "The lock opens as soon as the vendor carries this out. Anyone there can then open it.", "Unlock");
      if (!ok) return;
    }
    await this.send("set", { lock: value });
  }

  async send(op, body, action = null) {
    const path = action ? `request/${encodeURIComponent(action)}` : op;
    const { status, body: answer } = await post(`/api/devices/${encodeURI(this.key)}/${path}`, body);
    if (answer.command) {
      this.commands.set(answer.command.transaction, answer.command);
      this.renderCommands();
    }
    if (status >= 400 && !answer.command) announce(`${this.key}: ${answer.error ? answer.error.message : status}`);
  }

  renderCommands() {
    const mine = [...this.commands.values()].sort((a, b) => (a.sent_at < b.sent_at ? 1 : -1));
    const now = Date.now();
    const items = mine.slice(0, 20).map((c) => {
      const probe = commandItem(c, now).textContent; // the text decides whether the item changed
      return this.commandNodes.get(c.transaction, probe, () => commandItem(c, now));
    });
    this.commandNodes.sweep();
    reconcile(this.commandList, items.length ? items : [h("li", { class: "empty" }, "None yet. Answers appear here as they arrive.")]);
  }

  renderTwin() {
    const twin = this.twin;
    if (!twin) {
      clear(this.twinBox, h("p", { class: "empty" }, "No twin retained for this device (yet)."));
      clear(this.current);
      return;
    }
    const names = [...new Set([...Object.keys(twin.desired || {}), ...Object.keys(twin.reported || {}), ...Object.keys(twin.delta || {})])].sort();
    const cell = (value) => h("td", {}, value === undefined ? "" : short(value));
    const rows = names.map((name) => {
      const meta = (twin.metadata || {})[name] || {};
      return h("tr", { dataset: { field: name } }, h("th", { scope: "row" }, name), cell(twin.desired?.[name]), cell(twin.reported?.[name]),
        cell(twin.delta?.[name]), h("td", { title: meta.observed_at || "" }, clock(meta.observed_at)),
        h("td", { title: meta.received_at || "" }, clock(meta.received_at)), h("td", {}, meta.source || ""));
    });
    clear(this.twinBox, 
      h("p", { class: "sub" }, `version ${twin.version}`, twin.hold ? ` · held ${twin.hold}` : ""),
      h("div", { class: "scroll-x", tabindex: 0, role: "region", "aria-label": "Twin fields" },
        h("table", { class: "twin-table" }, h("caption", { class: "visually-hidden" }, "Desired, reported and delta per field"),
          h("thead", {}, h("tr", {}, ["Field", "Desired", "Reported", "Delta", "Observed", "Received", "Source"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows))));
    const cmd = twin.command;
    clear(this.current, h("h4", {}, "Current or last command"), cmd
      ? h("dl", { class: "facts", id: "current-command" },
        fact("Command", `${cmd.name} ${short(cmd.value)}`), fact("Status", cmd.status), fact("Source", cmd.source),
        fact("Transaction", cmd.transaction || ""), fact("Accepted", clock(cmd.accepted_at)), fact("Expires", clock(cmd.expires_at)),
        fact("Attempts", String(cmd.attempts)), cmd.error ? fact("Error", errorText(cmd.error)) : null)
      : h("p", { class: "empty" }, "No command yet."));
  }

  renderHistory() {
    const byCommand = new Map();
    const others = [];
    for (const event of this.events) {
      if (event.type === "command" && event.data && event.data.command_id) {
        const entry = byCommand.get(event.data.command_id) || { data: event.data, steps: [] };
        entry.steps.push({ to: event.data.to, at: event.at, error: event.data.error });
        entry.data = event.data;
        byCommand.set(event.data.command_id, entry);
      } else others.push(event);
    }
    const items = [...byCommand.values()].reverse().map((entry) => h("li", {},
      h("strong", {}, entry.data.name), entry.data.target ? ` ${entry.data.target}` : "", " ",
      h("span", { class: "sub" }, `${entry.data.source || ""} ${entry.data.transaction || ""}`),
      h("ol", { class: "steps" }, entry.steps.map((s) => h("li", { class: `step step-${s.to}` }, h("strong", {}, s.to),
        s.error ? h("span", { class: "error-text" }, ` ${errorText(s.error)}`) : null, h("span", { class: "sub" }, ` ${clock(s.at)}`))))));
    clear(this.history, h("h4", {}, "Recent commands (since you logged in)"),
      items.length ? h("ul", { class: "history", id: "device-history-list" }, items) : h("p", { class: "empty" }, "None seen yet."),
      others.length ? h("h4", {}, "Other events") : null,
      others.length ? h("ul", { class: "history" }, others.slice(-10).reverse().map((e) => h("li", {}, h("strong", {}, e.type), ` ${clock(e.at)} `, short(e.data)))) : null);
  }

  renderExtras() {
    const cards = this.twin?.reported?.cards;
    this.cardsCard.hidden = !(cards && typeof cards === "object");
    if (!this.cardsCard.hidden) {
      const entries = Object.entries(cards);
      clear(this.cardsCard, h("h3", { id: "h-cards" }, "Cards"),
        entries.length ? h("table", { class: "small-table", id: "cards-table" },
          h("thead", {}, h("tr", {}, ["Card", "Valid from", "Valid until", "Frozen"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, entries.map(([id, c]) => h("tr", {}, h("td", {}, id), h("td", {}, clock(c?.begin)), h("td", {}, clock(c?.end)),
            h("td", {}, c?.frozen ? "frozen" : "no")))))
          : h("p", { class: "empty" }, "No cards on this lock."),
        h("p", { class: "sub" }, "Card numbers are masked by the bridge; only the last four characters are ever published."));
    }
    this.usersCard.hidden = !(this.meta.actions || []).includes("list_users");
    if (this.usersCard.hidden) return;
    const last = [...this.commands.values()].filter((c) => c.op === "list_users").pop();
    const answer = last?.answers.find((a) => a.data && a.status === "succeeded");
    const data = answer ? answer.data : null;
    const list = data ? [data.records, data.users, data.result, data.list, data].find(Array.isArray) : null;
    clear(this.usersBox,
      last && !answer ? h("p", { class: isFinal(last) ? "error-text" : "sub" }, outcome(last)) : null,
      list ? (list.length ? usersTable(list) : h("p", { class: "empty" }, "This lock has no users.")) : null,
      data && data.total !== undefined ? h("p", { class: "sub" }, `${data.total} users${data.has_more ? " (first page)" : ""}`) : null);
  }

  renderActions() {
    const table = this.meta.action_table || {};
    const names = Object.keys(table).sort();
    const signature = names.join(",");
    if (this.actionsBuilt === signature) return;
    this.actionsBuilt = signature;
    if (!names.length) {
      clear(this.actions, h("p", { class: "empty" }, "This device offers no vendor action (or its bridge has not published its action table)."));
      return;
    }
    clear(this.actions, ...names.map((name) => {
      const info = table[name];
      const form = actionForm(name, info, (args) => this.send("request", { arguments: args }, name));
      return h("details", { class: "action", dataset: { action: name } }, h("summary", {}, h("strong", {}, name),
        info.description ? h("span", { class: "sub" }, ` ${info.description}`) : null), form);
    }));
  }
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function usersTable(users) {
  const keys = [...new Set(users.flatMap((u) => Object.keys(u || {})))].filter((k) => typeof users[0]?.[k] !== "object").slice(0, 6);
  return h("table", { class: "small-table", id: "users-table" },
    h("thead", {}, h("tr", {}, keys.map((k) => h("th", { scope: "col" }, k)))),
    h("tbody", {}, users.map((u) => h("tr", {}, keys.map((k) => h("td", {}, short(u?.[k])))))));
}
