// A form for a vendor action, generated from the JSON Schema of its arguments (bridge/{vendor}/actions).
// Inputs carry the schema's limits (required, min/max, length, pattern, choices); nested objects become
// fieldsets (an optional one is sent only when something in it is filled in). The bridge still validates
// everything and answers INVALID_PAYLOAD otherwise.

import { h } from "./dom.js";

let formCount = 0;

function resolve(schema, root) {
  let current = schema || {};
  for (let depth = 0; current.$ref && depth < 10; depth++) {
    const name = current.$ref.split("/").pop();
    const rest = Object.fromEntries(Object.entries(current).filter(([k]) => k !== "$ref"));
    current = { ...((root.$defs || {})[name] || {}), ...rest };
  }
  const options = current.anyOf || current.oneOf;
  if (Array.isArray(options)) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) {
      const inner = resolve(real[0], root);
      return { ...inner, nullable: real.length < options.length, title: current.title || inner.title,
        description: current.description || inner.description, default: current.default ?? inner.default };
    }
  }
  return current;
}

function kindOf(schema) {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.const !== undefined) return "const";
  if (schema.type === "object" && schema.properties) return "object";
  if (schema.type === "array" && schema.items && Array.isArray(schema.items.enum)) return "choices";
  if (schema.type === "array" && schema.items && ["string", "integer", "number"].includes(schema.items.type)) return "list";
  if (["string", "integer", "number", "boolean"].includes(schema.type)) return schema.type;
  return "json";
}

function bound(schema, kind, inclusive, exclusive, sign) {
  if (schema[inclusive] !== undefined) return schema[inclusive];
  if (schema[exclusive] !== undefined) return schema[exclusive] + (kind === "integer" ? sign : 0);
  return null;
}

function control(name, schema, required, id, label) {
  const kind = kindOf(schema);
  const common = { id, name, "data-kind": kind };
  if (kind === "enum") {
    const preset = schema.default !== undefined && schema.default !== null;
    return h("select", { ...common, required }, preset ? null : h("option", { value: "" }, "(not set)"),
      schema.enum.map((v) => h("option", { value: JSON.stringify(v), selected: schema.default === v }, String(v))));
  }
  if (kind === "const") return h("input", { ...common, value: String(schema.const), readonly: true });
  if (kind === "boolean") {
    if (required || (schema.default !== undefined && schema.default !== null)) {
      return h("input", { ...common, type: "checkbox", checked: schema.default === true });
    }
    return h("select", { ...common }, h("option", { value: "" }, "(not set)"), h("option", { value: "true" }, "yes"),
      h("option", { value: "false" }, "no"));
  }
  if (kind === "integer" || kind === "number") {
    return h("input", { ...common, type: "number", required, min: bound(schema, kind, "minimum", "exclusiveMinimum", 1),
      max: bound(schema, kind, "maximum", "exclusiveMaximum", -1), step: kind === "integer" ? 1 : "any",
      value: schema.default ?? "", inputmode: kind === "integer" ? "numeric" : "decimal" });
  }
  if (kind === "string") {
    return h("input", { ...common, required, minlength: schema.minLength, maxlength: schema.maxLength,
      placeholder: schema.format === "date-time" ? "2026-12-07T23:00:00+01:00" : "", value: schema.default ?? "",
      autocomplete: "off", "data-pattern": schema.pattern });
  }
  if (kind === "choices") {
    return h("fieldset", { ...common, class: "choices" }, h("legend", { class: "visually-hidden" }, label),
      schema.items.enum.map((v, i) => h("label", { class: "check" },
        h("input", { type: "checkbox", value: JSON.stringify(v), id: `${id}-${i}`, checked: (schema.default || []).includes(v) }), String(v))));
  }
  if (kind === "list") return h("input", { ...common, required, placeholder: "comma separated", autocomplete: "off" });
  return h("textarea", { ...common, required, rows: 3, placeholder: "JSON", spellcheck: "false" },
    schema.default !== undefined && schema.default !== null ? JSON.stringify(schema.default) : "");
}

function valueOf(el, schema) {
  const kind = el.dataset.kind;
  if (kind === "choices") {
    const picked = [...el.querySelectorAll("input:checked")].map((i) => JSON.parse(i.value));
    return picked.length ? picked : undefined;
  }
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

// The fields of one object schema into `container`; returns a reader: () => value, or throws {input, message}.
function fields(container, objectSchema, root, prefix) {
  const required = new Set(objectSchema.required || []);
  const readers = [];
  for (const [name, raw] of Object.entries(objectSchema.properties || {})) {
    const schema = resolve(raw, root);
    const id = `${prefix}-${name}`;
    const label = schema.title || name;
    const help = [schema.description, rangeText(schema)].filter(Boolean).join(" · ");
    const mark = required.has(name) ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null;
    if (kindOf(schema) === "object") {
      const set = h("fieldset", { class: "nested", "data-name": name },
        h("legend", {}, label, mark, required.has(name) ? null : h("span", { class: "sub" }, " (optional)")),
        help ? h("p", { class: "help" }, help) : null);
      const read = fields(set, schema, root, id);
      container.append(set);
      readers.push([name, () => {
        const filled = [...set.querySelectorAll("input, select, textarea")].some((el) =>
          el.type === "checkbox" ? el.checked !== el.defaultChecked : el.value.trim() !== "" && el.value !== el.defaultValue);
        if (!required.has(name) && !filled) return undefined; // an optional group left alone is not sent
        return read();
      }]);
      continue;
    }
    const input = control(name, schema, required.has(name), id, label);
    if (help) input.setAttribute("aria-describedby", `${id}-help`);
    container.append(h("div", { class: `field kind-${input.dataset.kind}` }, h("label", { for: id }, label, mark), input,
      help ? h("p", { class: "help", id: `${id}-help` }, help) : null));
    readers.push([name, () => {
      input.setCustomValidity?.("");
      let value;
      try {
        value = valueOf(input, schema);
      } catch {
        input.setCustomValidity?.("not valid JSON");
      }
      const pattern = input.dataset.pattern;
      if (typeof value === "string" && pattern && !new RegExp(pattern, "u").test(value)) input.setCustomValidity(`must match ${pattern}`);
      if (input.checkValidity && !input.checkValidity()) throw { input, message: `${label}: ${input.validationMessage}` };
      return value;
    }]);
  }
  return () => {
    const value = {};
    for (const [name, read] of readers) {
      const v = read();
      if (v !== undefined) value[name] = v;
    }
    return value;
  };
}

// The form; onSubmit(arguments) is called with the arguments once the inputs are valid.
export function actionForm(action, info, onSubmit) {
  formCount += 1;
  const root = info.arguments || {};
  const form = h("form", { class: "action-form", novalidate: true });
  const read = fields(form, root, root, `f${formCount}`);
  const error = h("p", { class: "error", role: "alert" });
  const hasFields = Object.keys(root.properties || {}).length > 0;
  form.append(error, h("button", { type: "submit", class: "primary" }, hasFields ? `Run ${action}` : action));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      onSubmit(read());
    } catch (problem) {
      if (!problem || !problem.message) throw problem;
      error.textContent = problem.message;
      problem.input?.focus();
    }
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
