// The fleet service's jobs (retained on {base}/fleet/jobs/{id}): progress, counts, rate, and cancel.
// Shown only when something is retained under {base}/fleet/.

import { post } from "./api.js";
import { outcome } from "./commands.js";
import { announce, clear, clock, h } from "./dom.js";

const DONE = ["SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "CANCELED", "SKIPPED"];
const ACTIVE = new Set(["SCHEDULED", "IN_PROGRESS"]);
const ORDER = { IN_PROGRESS: 0, SCHEDULED: 1, COMPLETED: 2, ABORTED: 3, CANCELED: 4 };

export function activeJobs(fleet) {
  return (fleet.fleet.jobs || []).filter((j) => ACTIVE.has(j.status)).length;
}

function operationText(op) {
  if (!op) return "";
  if (op.kind === "set") return `set ${op.field} ${op.value}`;
  if (op.kind === "action") return `action ${op.action}`;
  return JSON.stringify(op);
}

export class JobsView {
  constructor(root, fleet, { confirm }) {
    this.root = root;
    this.fleet = fleet;
    this.confirm = confirm;
    fleet.on((kinds) => {
      if (kinds.has("fleet") || kinds.has("commands")) this.render();
    });
    this.render();
  }

  render() {
    const { present, state, jobs = [] } = this.fleet.fleet;
    const sorted = [...jobs].sort((a, b) => (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9) || (a.created_at < b.created_at ? 1 : -1));
    clear(this.root, 
      h("h2", { id: "jobs-title" }, "Jobs"),
      h("p", { class: "sub" }, present ? `fleet service: ${state || "state unknown"}` : "The fleet service has published nothing."),
      sorted.length ? h("ul", { class: "job-list", id: "jobs-list" }, sorted.map((job) => this.item(job))) : h("p", { class: "empty" }, "No jobs."));
  }

  item(job) {
    const counts = job.counts || {};
    const total = Number(job.total) || 0;
    const done = DONE.reduce((n, k) => n + (Number(counts[k]) || 0), 0);
    const percent = total ? Math.round((100 * done) / total) : 0;
    const titleId = `job-${job.id}-title`;
    const progress = h("progress", { max: total || 1, value: done, "aria-labelledby": titleId, id: `job-${job.id}-progress` });
    const chips = Object.entries(counts).filter(([, n]) => n).map(([k, n]) => h("span", { class: `chip chip-${k.toLowerCase()}` }, `${n} ${k.toLowerCase().replace("_", " ")}`));
    const cancelling = this.fleet.commandsFor(`fleet/jobs/${job.id}`).pop();
    const status = job.paused ? `${job.status} (paused)` : job.status;
    return h("li", { class: `job job-${String(job.status).toLowerCase()}`, dataset: { job: job.id } },
      h("div", { class: "job-head" }, h("strong", { id: titleId }, job.name || job.id), " ",
        h("span", { class: `badge status-${String(job.status).toLowerCase()}` }, status)),
      h("p", { class: "sub" }, `${operationText(job.operation)} · ${job.target?.query || "listed devices"} · ${total} devices`),
      h("div", { class: "progress-line" }, progress, h("span", {}, `${done} of ${total} done (${percent} %)`)),
      h("p", { class: "chips" }, chips),
      h("p", { class: "sub" }, [
        job.rate ? `${Number(job.rate).toFixed(1)} per s` : null,
        job.estimated_end ? `ends about ${clock(job.estimated_end)}` : null,
        job.started_at ? `started ${clock(job.started_at)}` : job.schedule ? `scheduled ${JSON.stringify(job.schedule)}` : null,
        job.ended_at ? `ended ${clock(job.ended_at)}` : null,
      ].filter(Boolean).join(" · ")),
      ACTIVE.has(job.status) ? h("button", { type: "button", class: "danger", "aria-label": `Cancel job ${job.name || job.id}`,
        onclick: () => this.cancel(job) }, "Cancel job") : null,
      cancelling ? h("p", { class: "sub cancel-outcome" }, `cancel: ${outcome(cancelling)}`) : null);
  }

  async cancel(job) {
    const ok = await this.confirm(`Cancel job ${job.name || job.id}?`,
      "Executions not started yet are canceled; those in flight finish.", "Cancel job");
    if (!ok) return;
    const { status, body } = await post(`/api/jobs/${encodeURIComponent(job.id)}/cancel`, {});
    if (body.command) this.fleet.updateCommands([body.command]);
    else if (status >= 400) announce(body.error ? body.error.message : `cancel failed (${status})`);
  }
}
