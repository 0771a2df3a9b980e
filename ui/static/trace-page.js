// One trace as a waterfall: span rows in tree order, each bar placed on the trace's timeline,
// the proxy timing breakdown drawn inside proxy spans, the critical path underlined, and the
// clicked span's details (attributes, events, resource, scope, links) beside it.

import { api } from "./api.js";
import { attributeTable, clear, el, formatNs, formatTime, nanosToMs } from "./dom.js";
import { buildTrace, RETRIES } from "./trace-model.js";

const percent = (value, total) => `${((value / total) * 100).toFixed(4)}%`;

export function tracePage(root, traceId) {
  const body = el("div", { class: "trace" }, el("p", { class: "muted", text: "loading trace…" }));
  root.append(body);
  api.trace(traceId).then((trace) => renderTrace(body, trace), (error) => {
    body.replaceChildren(el("h1", { text: `Trace ${traceId}` }), el("p", { class: "error", text: error.message }));
  });
}

function renderTrace(body, trace) {
  const model = buildTrace(trace);
  const details = el("aside", { class: "details span-details", id: "span-details" }, el("p", { class: "muted", text: "Click a span for its details." }));
  const rows = el("div", { class: "waterfall", id: "waterfall", role: "list" });
  let selectedRow = null;
  const select = (node, row) => {
    selectedRow?.classList.remove("selected");
    selectedRow = row;
    row.classList.add("selected");
    spanDetails(details, node, trace);
  };
  rows.append(ruler(model.total));
  for (const node of model.rows) {
    const row = spanRow(node, model.total);
    row.addEventListener("click", () => select(node, row));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select(node, row);
      }
    });
    rows.append(row);
  }
  body.replaceChildren(
    el("h1", {}, [el("span", { class: "service", text: trace.rootService }), " ", el("span", { text: trace.rootName })]),
    el("p", { class: "summary" }, [
      `${formatNs(Number(trace.durationNano))} · ${trace.spanCount} spans · `,
      el("span", { class: trace.errorCount ? "error" : "", text: `${trace.errorCount} errors` }),
      ` · ${trace.services.length} services · started ${formatTime(nanosToMs(trace.startTimeUnixNano))} · `,
      el("code", { text: trace.traceId }),
    ]),
    legend(),
    el("div", { class: "trace-layout" }, [rows, details]),
  );
}

function legend() {
  const key = (cls, text) => el("span", { class: "key" }, [el("span", { class: `swatch ${cls}` }), text]);
  return el("div", { class: "legend" }, [
    key("seg-queue", "queue"), key("seg-connect", "connect"), key("seg-retry-wait", "retry wait"),
    key("seg-first-byte", "first byte"), key("seg-body", "body"), key("critical-key", "critical path"),
    key("skew-key", "shifted for clock skew"),
  ]);
}

function ruler(total) {
  const marks = [0, 0.25, 0.5, 0.75, 1].map((fraction) =>
    el("span", { class: "tick", style: { left: `${fraction * 100}%` }, text: formatNs(Math.round(total * fraction)) }));
  return el("div", { class: "span-row ruler" }, [el("div", { class: "label" }, "span"), el("div", { class: "timeline" }, marks)]);
}

function spanRow(node, total) {
  const span = node.span;
  const error = span.status.code === "ERROR";
  const retries = Number(span.attributes[RETRIES]) || 0;
  const bar = el("div", {
    class: `bar kind-${span.kind.toLowerCase()}${error ? " error" : ""}${node.breakdown.length ? " proxy" : ""}`,
    style: { left: percent(node.start, total), width: percent(Math.max(node.end - node.start, 0), total) },
  });
  const extent = Math.max(node.end - node.start, 1);
  for (const segment of node.breakdown) {
    bar.append(el("div", {
      class: `segment seg-${segment.name.replace(" ", "-")}`,
      style: { left: percent(segment.from, extent), width: percent(Math.min(segment.to, extent) - Math.min(segment.from, extent), extent) },
      title: `${segment.name} ${formatNs(segment.ns)}`,
      dataset: { segment: segment.name },
    }));
  }
  const timeline = el("div", { class: "timeline" }, [bar]);
  for (const [from, to] of node.critical) {
    timeline.append(el("div", { class: "critical", style: { left: percent(from, total), width: percent(to - from, total) } }));
  }
  const notes = [formatNs(node.duration)];
  if (retries) notes.push(`↻${retries}`);
  // The note goes after the bar, else before it, else (a bar spanning the row) inside its end.
  const note = el("span", { class: "bar-note", text: notes.join(" ") });
  if (node.end / total <= 0.8) note.style.left = percent(node.end, total);
  else if (node.start / total >= 0.2) note.style.right = percent(total - node.start, total);
  else {
    note.style.right = percent(total - node.end, total);
    note.classList.add("inside");
  }
  timeline.append(note);
  if (node.skew || node.clamped) {
    timeline.append(el("span", {
      class: "skew-marker", style: { left: percent(node.start, total) }, text: "⇄",
      title: `shifted ${formatNs(node.skew)}${node.clamped ? ", clamped to its parent" : ""} for clock skew`,
    }));
  }
  return el("div", {
    class: `span-row${node.critical.length ? " on-critical-path" : ""}${error ? " error" : ""}${node.skew || node.clamped ? " skewed" : ""}`,
    role: "listitem",
    tabindex: 0,
    dataset: { spanId: span.spanId, depth: node.depth },
  }, [
    el("div", { class: "label", style: { paddingLeft: `${6 + node.depth * 14}px` } }, [
      orphan(node) ? el("span", { class: "orphan-marker", title: "its parent span has not arrived (yet)", text: "⤴ " }) : null,
      el("span", { class: "service", text: span.service }),
      " ",
      el("span", { class: "span-name", text: span.name }),
    ]),
    timeline,
  ]);
}

function orphan(node) {
  return Boolean(node.span.parentSpanId) && !node.parent;
}

function spanDetails(details, node, trace) {
  const span = node.span;
  const traceStart = BigInt(trace.startTimeUnixNano);
  const offset = (text) => formatNs(Number(BigInt(text) - traceStart));
  clear(details);
  details.append(
    el("h2", { class: "span-name", text: span.name }),
    el("table", { class: "attrs" }, [
      ["service", span.service], ["kind", span.kind],
      ["status", span.status.message ? `${span.status.code}: ${span.status.message}` : span.status.code],
      ["duration", formatNs(node.duration)], ["starts at", `+${offset(span.startTimeUnixNano)}`],
      ["span id", span.spanId], ["parent id", span.parentSpanId ? `${span.parentSpanId}${orphan(node) ? " (not received)" : ""}` : "(root)"],
    ].map(([key, value]) => el("tr", {}, [el("th", { text: key }), el("td", { text: value })]))),
  );
  if (node.skew || node.clamped) {
    details.append(el("p", { class: "warn", text: `Drawn shifted by ${formatNs(node.skew)}${node.clamped ? " and clamped" : ""}: it lies outside its parent (clock skew between hosts).` }));
  }
  if (node.breakdown.length) {
    details.append(el("h3", { text: "Proxy timing" }), el("table", { class: "attrs breakdown" },
      node.breakdown.map((segment) => el("tr", {}, [el("th", {}, [el("span", { class: `swatch seg-${segment.name.replace(" ", "-")}` }), segment.name]), el("td", { text: formatNs(segment.ns) })]))));
  }
  details.append(el("h3", { text: "Attributes" }), attributeTable(span.attributes));
  details.append(el("h3", { text: `Events (${span.events.length})` }));
  for (const event of span.events) {
    details.append(el("div", { class: "event" }, [el("strong", { text: event.name }), ` +${offset(event.timeUnixNano)}`, attributeTable(event.attributes)]));
  }
  details.append(el("h3", { text: "Resource" }), attributeTable(span.resource.attributes));
  details.append(el("h3", { text: "Scope" }), el("p", { text: [span.scope.name, span.scope.version].filter(Boolean).join(" ") || "(none)" }), attributeTable(span.scope.attributes));
  if (span.links.length) {
    details.append(el("h3", { text: `Links (${span.links.length})` }), el("ul", {}, span.links.map((link) =>
      el("li", {}, [el("a", { href: `#/trace/${link.traceId}`, text: `${link.traceId} / ${link.spanId}` }), attributeTable(link.attributes)]))));
  }
}
