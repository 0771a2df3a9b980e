// Trace search: the query API's filters as a form whose state lives in the URL (so a search can be
// linked to, as the graph's example-trace links do), the results as a list and as a
// duration-over-time scatter plot whose points open their trace.

import { api } from "./api.js";
import { scatterPlot } from "./charts.js";
import { el, formatNs, formatTime, nanosToMs } from "./dom.js";
import { traceLink } from "./trace-link.js";

const LOOKBACKS = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, any: null };
const FIELDS = ["service", "operation", "minDuration", "maxDuration", "start", "end", "lookback", "limit", "error"];

export function searchPage(root, params) {
  const value = (name, fallback = "") => params.get(name) ?? fallback;
  const serviceSelect = el("select", { name: "service", id: "search-service" }, el("option", { value: "", text: "any service" }));
  const operationSelect = el("select", { name: "operation", id: "search-operation" }, el("option", { value: "", text: "any operation" }));
  const input = (name, placeholder, attrs = {}) => el("input", { name, id: `search-${name}`, placeholder, value: value(name), ...attrs });
  const form = el("form", { class: "search-form", id: "search-form" }, [
    field("Service", serviceSelect),
    field("Operation", operationSelect),
    field("Tags (key=value, one per line)", el("textarea", { name: "tag", id: "search-tag", rows: 2, placeholder: "http.response.status_code=500", text: params.getAll("tag").join("\n") })),
    field("Min duration", input("minDuration", "e.g. 250ms")),
    field("Max duration", input("maxDuration", "e.g. 2s")),
    field("Lookback", el("select", { name: "lookback", id: "search-lookback" }, Object.keys(LOOKBACKS).map((name) =>
      el("option", { value: name, text: name === "any" ? "any time" : `last ${name}`, selected: name === value("lookback", "1h") })))),
    field("Start (RFC 3339 or µs; overrides lookback)", input("start", "2026-11-25T01:00:00Z")),
    field("End", input("end", "now")),
    field("Errors", el("select", { name: "error", id: "search-error" }, [["", "any"], ["true", "only errors"], ["false", "no errors"]].map(([v, text]) =>
      el("option", { value: v, text, selected: v === value("error") })))),
    field("Limit", input("limit", "20", { type: "number", min: 1, max: 1000, value: value("limit", "20") })),
    el("button", { type: "submit", id: "search-submit", text: "Find traces" }),
  ]);
  const results = el("section", { class: "results", id: "search-results" });
  root.append(el("h1", { text: "Trace search" }), el("div", { class: "search-layout" }, [form, results]));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const name of FIELDS) if (data.get(name)) query.set(name, data.get(name));
    for (const tag of String(data.get("tag") || "").split("\n").map((line) => line.trim()).filter(Boolean)) query.append("tag", tag);
    const next = `#/search?${query}`;
    if (location.hash === next) run();
    else location.hash = next;
  });
  serviceSelect.addEventListener("change", () => loadOperations(operationSelect, serviceSelect.value, ""));

  api.services().then((services) => {
    serviceSelect.append(...services.map((name) => el("option", { value: name, text: name, selected: name === value("service") })));
    if (value("service") && !services.includes(value("service"))) serviceSelect.append(el("option", { value: value("service"), text: value("service"), selected: true }));
    loadOperations(operationSelect, serviceSelect.value, value("operation"));
  }, (error) => results.replaceChildren(el("p", { class: "error", text: error.message })));

  function run() {
    const query = { tag: params.getAll("tag") };
    for (const name of ["service", "operation", "minDuration", "maxDuration", "end", "limit", "error"]) query[name] = value(name);
    const lookback = LOOKBACKS[value("lookback", "1h")];
    query.start = value("start") || (lookback ? (Date.now() - lookback * 1000) * 1000 : "");
    results.replaceChildren(el("p", { class: "muted", text: "searching…" }));
    api.traces(query).then((traces) => showResults(results, traces), (error) =>
      results.replaceChildren(el("p", { class: "error", id: "search-error-message", text: error.message })));
  }
  run();
}

function field(label, control) {
  return el("label", { class: "field" }, [el("span", { text: label }), control]);
}

async function loadOperations(select, service, chosen) {
  select.replaceChildren(el("option", { value: "", text: "any operation" }));
  if (!service) return;
  const operations = await api.operations(service).catch(() => []);
  const names = [...new Set(operations.map((operation) => operation.name))].sort();
  if (chosen && !names.includes(chosen)) names.push(chosen);
  select.append(...names.map((name) => el("option", { value: name, text: name, selected: name === chosen })));
}

function showResults(results, traces) {
  if (!traces.length) {
    results.replaceChildren(el("p", { class: "empty", id: "no-results", text: "No traces match." }));
    return;
  }
  const points = traces.map((trace) => ({
    t: nanosToMs(trace.startTimeUnixNano),
    v: Number(trace.durationNano),
    error: trace.errorCount > 0,
    label: `${trace.rootService} ${trace.rootName} · ${formatNs(Number(trace.durationNano))} · ${formatTime(nanosToMs(trace.startTimeUnixNano))}`,
    href: `#/trace/${trace.traceId}`,
  }));
  results.replaceChildren(
    el("p", { class: "muted", id: "result-count", text: `${traces.length} trace${traces.length === 1 ? "" : "s"}` }),
    scatterPlot({ title: "duration over time", points, yFormat: formatNs }),
    el("ul", { class: "trace-list", id: "trace-list" }, traces.map(traceLink)),
  );
}
