// How a command of this session is shown: every answer as it arrived, errors with the normalized code and
// the vendor's own code and message, and a broker's refusal (MQTT v5 PUBACK reason code) as a refusal.

import { clock, h } from "./dom.js";

export const FINAL = new Set(["rejected", "succeeded", "failed", "expired", "superseded", "refused", "unsent"]);
const SILENCE = 10000; // ms without an answer before the page says so

export function errorText(error) {
  if (!error) return "";
  let text = `${error.code}: ${error.message || ""}`.trim();
  if (error.vendor_code || error.vendor_message) {
    text += ` (vendor ${[error.vendor_code, error.vendor_message].filter(Boolean).join(": ")})`;
  }
  if (error.retry_after) text += `, retry after ${error.retry_after} s`;
  return text;
}

export function refusalText(broker) {
  const code = broker && broker.code !== null && broker.code !== undefined ? ` (MQTT reason code 0x${broker.code.toString(16).toUpperCase().padStart(2, "0")})` : "";
  return `Refused by the broker: ${broker ? broker.name : "?"}${code}. Your login may not do this.`;
}

export function outcome(command) {
  if (command.status === "refused") return refusalText(command.broker);
  if (command.status === "unsent") return `Not sent: ${command.broker ? command.broker.name : "no connection to the broker"}`;
  const last = command.answers[command.answers.length - 1];
  if (!last) return "published, waiting for the bridge";
  return last.error ? `${last.status}: ${errorText(last.error)}` : last.status;
}

export function isFinal(command) {
  return FINAL.has(command.status);
}

export function commandItem(command, now = Date.now()) {
  const steps = [h("li", { class: `step step-${command.status === "refused" ? "refused" : "published"}` },
    command.status === "refused" || command.status === "unsent" ? outcome(command) : "published",
    command.broker && command.status !== "refused" ? h("span", { class: "sub" }, ` broker: ${command.broker.name}`) : null)];
  for (const answer of command.answers) {
    steps.push(h("li", { class: `step step-${answer.status}` }, h("strong", {}, answer.status),
      answer.error ? h("span", { class: "error-text" }, ` ${errorText(answer.error)}`) : null,
      h("time", { datetime: answer.at, class: "sub" }, ` ${clock(answer.at)}`)));
  }
  const silent = !isFinal(command) && command.answers.length === 0 && command.status === "published" &&
    now - Date.parse(command.sent_at) > SILENCE;
  if (silent) steps.push(h("li", { class: "step step-silent" }, "no answer from the bridge yet: is it online?"));
  const data = command.answers.find((a) => a.data && a.status !== "accepted")?.data;
  return h("li", { class: `command status-${command.status}`, dataset: { transaction: command.transaction } },
    h("div", { class: "command-head" }, h("strong", {}, command.summary), " ",
      h("span", { class: "sub" }, `${clock(command.sent_at)} · ${command.transaction}`)),
    h("ol", { class: "steps", "aria-label": `answers to ${command.summary}` }, steps),
    data ? h("details", { class: "data" }, h("summary", {}, "answer data"), h("pre", {}, JSON.stringify(data, null, 2))) : null);
}
