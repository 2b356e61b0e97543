// A form for a vendor action, generated from the JSON Schema of its arguments (bridge/{vendor}/actions).
// Inputs carry the schema's limits (required, min/max, length, pattern, choices) so most mistakes are caught
// before anything is sent; the bridge still validates everything and answers INVALID_PAYLOAD otherwise.

import { h } from "./dom.js";

let formCount = 0;

function resolve(schema, root) {
  let current = schema || {};
  for (let depth = 0; current.$ref && depth < 10; depth++) {
    const name = current.$ref.split("/").pop();
    current = { ...((root.$defs || {})[name] || {}), ...Object.fromEntries(Object.entries(current).filter(([k]) => k !== "$ref")) };
  }
  const options = current.anyOf || current.oneOf;
  if (Array.isArray(options)) {
    const real = options.filter((o) => o.type !== "null");
    const nullable = real.length < options.length;
    if (real.length === 1) return { ...resolve(real[0], root), nullable, title: current.title, description: current.description, default: current.default };
  }
  return current;
}

function kindOf(schema) {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.const !== undefined) return "const";
  if (schema.type === "array" && schema.items && Array.isArray(schema.items.enum)) return "choices";
  if (schema.type === "array" && schema.items && ["string", "integer", "number"].includes(schema.items.type)) return "list";
  if (["string", "integer", "number", "boolean"].includes(schema.type)) return schema.type;
  return "json";
}

function control(name, schema, required, id) {
  const kind = kindOf(schema);
  const common = { id, name, "data-kind": kind };
  if (kind === "enum") {
    return h("select", { ...common, required }, required ? null : h("option", { value: "" }, "(not set)"),
      schema.enum.map((v) => h("option", { value: JSON.stringify(v), selected: schema.default === v }, String(v))));
  }
  if (kind === "const") return h("input", { ...common, value: String(schema.const), readonly: true });
  if (kind === "boolean") {
    if (required || schema.default !== undefined) return h("input", { ...common, type: "checkbox", checked: schema.default === true });
    return h("select", { ...common }, h("option", { value: "" }, "(not set)"), h("option", { value: "true" }, "yes"),
      h("option", { value: "false" }, "no"));
  }
  if (kind === "integer" || kind === "number") {
    const max = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum - (kind === "integer" ? 1 : 0) : null);
    const min = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + (kind === "integer" ? 1 : 0) : null);
    return h("input", { ...common, type: "number", required, min, max, step: kind === "integer" ? 1 : "any",
      value: schema.default ?? "", inputmode: kind === "integer" ? "numeric" : "decimal" });
  }
  if (kind === "string") {
    const placeholder = schema.format === "date-time" ? "2026-12-07T23:00:00+01:00" : "";
    return h("input", { ...common, required, minlength: schema.minLength, maxlength: schema.maxLength,
      placeholder, value: schema.default ?? "", autocomplete: "off", "data-pattern": schema.pattern });
  }
  if (kind === "choices") {
    return h("fieldset", { ...common, class: "choices" }, h("legend", { class: "visually-hidden" }, name),
      schema.items.enum.map((v, i) => h("label", { class: "check" },
        h("input", { type: "checkbox", value: JSON.stringify(v), id: `${id}-${i}`, checked: (schema.default || []).includes(v) }), String(v))));
  }
  if (kind === "list") return h("input", { ...common, required, placeholder: "comma separated", autocomplete: "off" });
  return h("textarea", { ...common, required, rows: 3, placeholder: "JSON", spellcheck: "false" },
    schema.default !== undefined ? JSON.stringify(schema.default) : "");
}

function valueOf(el, schema) {
  const kind = el.dataset.kind;
  if (kind === "choices") return [...el.querySelectorAll("input:checked")].map((i) => JSON.parse(i.value));
  if (kind === "boolean" && el.type === "checkbox") return el.checked;
  const raw = el.value.trim();
  if (raw === "") return undefined;
  if (kind === "enum") return JSON.parse(raw);
  if (kind === "const") return schema.const;
  if (kind === "boolean") return raw === "true";
  if (kind === "integer" || kind === "number") return Number(raw);
  if (kind === "list") {
    const items = raw.split(",").map((v) => v.trim()).filter(Boolean);
    return schema.items.type === "string" ? items : items.map(Number);
  }
  if (kind === "json") return JSON.parse(raw);
  return raw;
}

// The form; onSubmit(arguments) is called with the arguments once the inputs are valid.
export function actionForm(action, info, onSubmit, { disabled = false } = {}) {
  formCount += 1;
  const root = info.arguments || {};
  const properties = root.properties || {};
  const required = new Set(root.required || []);
  const fields = [];
  const form = h("form", { class: "action-form", novalidate: true });
  for (const [name, raw] of Object.entries(properties)) {
    const schema = resolve(raw, root);
    const id = `f${formCount}-${name}`;
    const helpId = `${id}-help`;
    const input = control(name, schema, required.has(name), id);
    const help = [schema.description, rangeText(schema)].filter(Boolean).join(" · ");
    if (help) input.setAttribute("aria-describedby", helpId);
    fields.push({ name, schema, input });
    const label = h("label", { for: id }, schema.title || raw.title || name, required.has(name) ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null);
    form.append(h("div", { class: `field kind-${input.dataset.kind}` }, label, input, help ? h("p", { class: "help", id: helpId }, help) : null));
  }
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", disabled }, fields.length ? `Run ${action}` : action);
  form.append(error, submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    const args = {};
    for (const { name, schema, input } of fields) {
      input.setCustomValidity?.("");
      let value;
      try {
        value = valueOf(input, schema);
      } catch {
        input.setCustomValidity?.("not valid JSON");
      }
      const pattern = input.dataset.pattern;
      if (typeof value === "string" && pattern && !new RegExp(pattern, "u").test(value)) {
        input.setCustomValidity(`must match ${pattern}`);
      }
      if (input.checkValidity && !input.checkValidity()) {
        error.textContent = `${schema.title || name}: ${input.validationMessage}`;
        input.focus();
        return;
      }
      if (value !== undefined) args[name] = value;
    }
    onSubmit(args);
  });
  return form;
}

function rangeText(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) parts.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) parts.push(`< ${schema.exclusiveMaximum}`);
  if (schema.maxLength !== undefined) parts.push(`at most ${schema.maxLength} characters`);
  if (schema.format === "date-time") parts.push("ISO 8601 with a time zone");
  return parts.join(", ");
}
