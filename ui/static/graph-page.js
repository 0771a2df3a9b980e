// The live service graph: polled every few seconds, laid out by layout.js, drawn as SVG; a click
// on a node or an edge opens its details (time series, endpoints, routes, example traces).

import { api } from "./api.js";
import { lineChart } from "./charts.js";
import { clear, el, formatMs, formatPercent, formatRate, formatTime, health, svg } from "./dom.js";
import { traceLink } from "./trace-link.js";
import { edgePath, labelPoint, layoutGraph, NODE_H, NODE_W } from "./layout.js";

const POLL_MS = 5000;
const RANGES = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600 };
const SERIES_STEP = { "5m": "10s", "15m": "30s", "1h": "60s" };
const LABEL_W = 128;
const LABEL_H = 32;

function edgeId(edge) {
  return `${edge.source}\u2192${edge.target}\u0000${edge.connectionType}`;
}

export function graphPage(root, params) {
  const state = {
    range: RANGES[params.get("range")] ? params.get("range") : "5m",
    window: SERIES_STEP[params.get("window")] ? params.get("window") : "15m",
    selected: params.get("node") ? { node: params.get("node") } : params.get("from") ? { from: params.get("from"), to: params.get("to") } : null,
    graph: null,
  };
  const status = el("span", { class: "status muted", text: "loading…" });
  const rangeSelect = el("select", { id: "graph-range", "aria-label": "graph time range", onchange: () => { state.range = rangeSelect.value; remember(); refresh(); } },
    Object.keys(RANGES).map((name) => el("option", { value: name, text: `last ${name}`, selected: name === state.range })));
  const canvas = el("div", { class: "graph-canvas", id: "graph-canvas" });
  const details = el("aside", { class: "details", id: "graph-details" });
  root.append(
    el("div", { class: "toolbar" }, [el("h1", { text: "Service graph" }), el("label", {}, ["Range ", rangeSelect]), status]),
    el("div", { class: "graph-layout" }, [canvas, details]),
  );

  function remember() {
    const query = new URLSearchParams({ range: state.range, window: state.window });
    if (state.selected?.node) query.set("node", state.selected.node);
    if (state.selected?.from) {
      query.set("from", state.selected.from);
      query.set("to", state.selected.to);
    }
    history.replaceState(null, "", `#/graph?${query}`);
  }

  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    try {
      const graph = await api.graph({ start: (Date.now() - RANGES[state.range] * 1000) * 1000 });
      if (mine !== generation) return;
      state.graph = graph;
      drawGraph(canvas, graph, state, select);
      status.textContent = `updated ${formatTime(Date.now()).slice(11, 19)} · ${graph.nodes.length} nodes, ${graph.edges.length} edges`;
      status.classList.remove("error");
      if (state.selected && !details.childElementCount) showDetails();
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    }
  }

  function select(selection) {
    state.selected = selection;
    remember();
    drawGraph(canvas, state.graph, state, select);
    showDetails();
  }

  function showDetails() {
    clear(details);
    if (!state.selected || !state.graph) return;
    const windowSelect = el("select", { id: "series-window", "aria-label": "chart window", onchange: () => { state.window = windowSelect.value; remember(); showDetails(); } },
      Object.keys(SERIES_STEP).map((name) => el("option", { value: name, text: `last ${name}`, selected: name === state.window })));
    const controls = el("div", { class: "toolbar small" }, [el("label", {}, ["Charts over ", windowSelect]), el("button", { type: "button", text: "close", onclick: () => select(null) })]);
    if (state.selected.node) nodeDetails(details, state.graph, state.selected.node, state.window, controls, select);
    else edgeDetails(details, state.graph, state.selected, state.window, controls);
  }

  refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}

function drawGraph(canvas, graph, state, select) {
  if (!graph.nodes.length) {
    canvas.replaceChildren(el("p", { class: "empty", text: "No requests in this range yet. Send traffic through the proxies (or run tracemesh demo)." }));
    return;
  }
  const edges = graph.edges.map((edge) => ({ ...edge, id: edgeId(edge) }));
  const layout = layoutGraph(graph.nodes.map((node) => node.name), edges);
  const markers = ["ok", "warn", "bad", "idle"].map((name) =>
    svg("marker", { id: `arrow-${name}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      [svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrow ${name}` })]));
  const edgeLayer = svg("g", { class: "edges" });
  const labelLayer = svg("g", { class: "edge-labels" });
  const placed = [...layout.nodes.values()].map((node) => ({ x: node.x - NODE_W / 2, y: node.y, w: NODE_W, h: NODE_H }));
  for (const edge of edges) {
    const route = layout.edges.get(edge.id);
    const condition = health(edge);
    const selected = state.selected?.from === edge.source && state.selected?.to === edge.target;
    const onclick = () => select({ from: edge.source, to: edge.target });
    const d = route.selfLoop ? selfLoopPath(route.points[0]) : edgePath(route.points);
    const group = svg("g", {
      class: `edge ${condition}${selected ? " selected" : ""}`,
      dataset: { source: edge.source, target: edge.target },
      onclick,
    }, [
      svg("path", { d, class: "hit" }),
      svg("path", { d, class: "wire", "marker-end": `url(#arrow-${condition})` }),
      svg("title", { text: `${edge.source} → ${edge.target} (${edge.connectionType})` }),
    ]);
    edgeLayer.append(group);
    const spot = route.selfLoop ? { x: route.points[0].x + 46, y: route.points[0].y } : freeSpot(route.points, placed);
    placed.push({ x: spot.x - LABEL_W / 2, y: spot.y - LABEL_H / 2, w: LABEL_W, h: LABEL_H });
    labelLayer.append(svg("g", {
      class: `edge-label ${condition}${selected ? " selected" : ""}`,
      transform: `translate(${spot.x.toFixed(1)} ${spot.y.toFixed(1)})`,
      dataset: { source: edge.source, target: edge.target },
      onclick,
    }, [
      svg("rect", { x: -LABEL_W / 2, y: -LABEL_H / 2, width: LABEL_W, height: LABEL_H, rx: 4 }),
      svg("text", { y: -3, "text-anchor": "middle", class: "rate", text: `${formatRate(edge.rps)} · ${formatPercent(1 - edge.errorRate)} ok` }),
      svg("text", { y: 11, "text-anchor": "middle", class: "latency", text: `p99 ${formatMs(edge.latencyMs.p99)}` }),
    ]));
  }
  const nodeLayer = svg("g", { class: "nodes" });
  for (const node of graph.nodes) {
    const at = layout.nodes.get(node.name);
    const selected = state.selected?.node === node.name;
    nodeLayer.append(svg("g", {
      class: `node ${node.kind} ${health(node.inbound)}${selected ? " selected" : ""}`,
      transform: `translate(${(at.x - NODE_W / 2).toFixed(1)} ${at.y})`,
      dataset: { name: node.name, kind: node.kind, layer: at.layer },
      onclick: () => select({ node: node.name }),
    }, [
      nodeShape(node.kind),
      svg("text", { x: NODE_W / 2, y: node.kind === "database" ? 27 : 22, "text-anchor": "middle", class: "name", text: shorten(node.name, 24) }),
      svg("text", {
        x: NODE_W / 2, y: node.kind === "database" ? 42 : 39, "text-anchor": "middle", class: "kind",
        text: node.inbound.requests ? `${node.kind} · in ${formatRate(node.inbound.rps)}` : node.kind,
      }),
      svg("title", { text: `${node.name} (${node.kind})` }),
    ]));
  }
  canvas.replaceChildren(svg("svg", {
    class: "graph", id: "service-graph", width: layout.width, height: layout.height + 20, viewBox: `0 0 ${layout.width} ${layout.height + 20}`,
  }, [svg("defs", {}, markers), edgeLayer, nodeLayer, labelLayer]));
}

function nodeShape(kind) {
  if (kind === "database") {
    return svg("g", { class: "shape" }, [
      svg("path", { d: `M 0 8 L 0 ${NODE_H - 8} A ${NODE_W / 2} 8 0 0 0 ${NODE_W} ${NODE_H - 8} L ${NODE_W} 8 A ${NODE_W / 2} 8 0 0 0 0 8 Z` }),
      svg("path", { d: `M 0 8 A ${NODE_W / 2} 8 0 0 0 ${NODE_W} 8`, class: "rim" }),
    ]);
  }
  return svg("rect", { class: "shape", width: NODE_W, height: NODE_H, rx: kind === "external" ? 2 : 10 });
}

function selfLoopPath(point) {
  return `M ${point.x} ${point.y - 10} C ${point.x + 50} ${point.y - 40} ${point.x + 50} ${point.y + 40} ${point.x} ${point.y + 10}`;
}

/** A label position along the edge's middle segment that overlaps no node and no earlier label. */
function freeSpot(points, placed) {
  const overlaps = (spot) => placed.some((box) =>
    spot.x - LABEL_W / 2 < box.x + box.w && spot.x + LABEL_W / 2 > box.x && spot.y - LABEL_H / 2 < box.y + box.h && spot.y + LABEL_H / 2 > box.y);
  for (const t of [0.5, 0.35, 0.65, 0.2, 0.8]) {
    const spot = labelPoint(points, t);
    if (!overlaps(spot)) return spot;
  }
  return labelPoint(points, 0.5);
}

function shorten(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function startMicros(window) {
  return (Date.now() - RANGES[window] * 1000) * 1000;
}

async function seriesCharts(container, params, window, combine) {
  const loading = el("p", { class: "muted", text: "loading series…" });
  container.append(loading);
  try {
    const answer = await api.edges({ ...params, start: startMicros(window), step: SERIES_STEP[window] });
    const xDomain = [Date.parse(answer.start), Date.parse(answer.end)];
    loading.replaceWith(...combine(answer, xDomain));
  } catch (error) {
    loading.textContent = error.message;
    loading.classList.add("error");
  }
}

function pointsOf(series, value) {
  return series.points.map((point) => ({ t: Date.parse(point.time), v: value(point) }));
}

function edgeDetails(details, graph, selection, window, controls) {
  const edge = graph.edges.find((one) => one.source === selection.from && one.target === selection.to);
  details.append(el("h2", {}, [selection.from, " → ", selection.to]), controls);
  if (!edge) {
    details.append(el("p", { class: "muted", text: "No requests on this edge in the graph's range." }));
    return;
  }
  details.append(metricsSummary(edge));
  const charts = el("div", { class: "charts" });
  details.append(charts);
  seriesCharts(charts, { from: edge.source, to: edge.target }, window, (answer, xDomain) => {
    const series = answer.series.find((one) => one.connectionType === edge.connectionType) || answer.series[0];
    if (!series) return [el("p", { class: "muted", text: "no data in this window" })];
    const step = answer.stepSeconds;
    return [
      lineChart({ title: "requests/s", xDomain, yFormat: formatRate, series: [{ name: "rate", cssClass: "s-rate", points: pointsOf(series, (p) => p.rps) }] }),
      lineChart({ title: "errors/s", xDomain, yFormat: formatRate, series: [{ name: "errors", cssClass: "s-error", points: pointsOf(series, (p) => p.errors / step) }] }),
      lineChart({
        title: "latency", xDomain, yFormat: formatMs, series: ["p50", "p95", "p99"].map((name) =>
          ({ name, cssClass: `s-${name}`, points: pointsOf(series, (p) => p.latencyMs[name]) })),
      }),
    ];
  });
  details.append(el("h3", { text: "Endpoints" }), breakdownTable(edge.endpoints, "endpoint"));
  details.append(el("h3", { text: "Routes" }), breakdownTable(edge.routes, "route"));
  const search = edge.source === "user" ? { service: edge.target } : { service: edge.source, tag: `peer.service=${edge.target}` };
  details.append(exampleTraces(search, edge.latencyMs.p90, window));
}

function nodeDetails(details, graph, name, window, controls, select) {
  const node = graph.nodes.find((one) => one.name === name);
  details.append(el("h2", { text: name }), controls);
  if (!node) {
    details.append(el("p", { class: "muted", text: "Not in the graph's range." }));
    return;
  }
  details.append(el("p", { class: "muted", text: `${node.kind} · requests into it:` }), metricsSummary(node.inbound));
  const charts = el("div", { class: "charts" });
  details.append(charts);
  seriesCharts(charts, { to: name }, window, (answer, xDomain) => {
    if (!answer.series.length) return [el("p", { class: "muted", text: "no data in this window" })];
    const step = answer.stepSeconds;
    const sum = (value) => answer.series[0].points.map((point, i) =>
      ({ t: Date.parse(point.time), v: answer.series.reduce((total, one) => total + value(one.points[i]), 0) }));
    return [
      lineChart({ title: "requests/s in", xDomain, yFormat: formatRate, series: [{ name: "rate", cssClass: "s-rate", points: sum((p) => p.rps) }] }),
      lineChart({ title: "errors/s in", xDomain, yFormat: formatRate, series: [{ name: "errors", cssClass: "s-error", points: sum((p) => p.errors / step) }] }),
      lineChart({
        title: "p99 by caller", xDomain, yFormat: formatMs, series: answer.series.slice(0, 5).map((one, i) =>
          ({ name: one.source, cssClass: `s-c${i}`, points: pointsOf(one, (p) => p.latencyMs.p99) })),
      }),
    ];
  });
  const edgeList = (title, edges, other) => [
    el("h3", { text: title }),
    edges.length ? el("ul", { class: "edge-list" }, edges.map((edge) => el("li", {}, [
      el("a", { href: "#", text: edge[other], onclick: (event) => { event.preventDefault(); select({ from: edge.source, to: edge.target }); } }),
      ` ${formatRate(edge.rps)} · ${formatPercent(1 - edge.errorRate)} ok · p99 ${formatMs(edge.latencyMs.p99)}`,
    ]))) : el("p", { class: "muted", text: "none" }),
  ];
  details.append(...edgeList("Called by", graph.edges.filter((edge) => edge.target === name), "source"));
  details.append(...edgeList("Calls", graph.edges.filter((edge) => edge.source === name), "target"));
  if (node.kind === "service") details.append(exampleTraces({ service: name }, node.inbound.latencyMs.p90, window));
}

function metricsSummary(metrics) {
  const cell = (label, value) => el("div", { class: "metric" }, [el("span", { class: "value", text: value }), el("span", { class: "label", text: label })]);
  return el("div", { class: `metrics ${health(metrics)}` }, [
    cell("rate", formatRate(metrics.rps)),
    cell("success", formatPercent(1 - metrics.errorRate)),
    cell("p50", formatMs(metrics.latencyMs.p50)),
    cell("p95", formatMs(metrics.latencyMs.p95)),
    cell("p99", formatMs(metrics.latencyMs.p99)),
    cell("retries", String(metrics.retries)),
  ]);
}

function breakdownTable(rows, label) {
  if (!rows.length) return el("p", { class: "muted", text: "none recorded" });
  return el("table", { class: `breakdown ${label}s` }, [
    el("thead", {}, el("tr", {}, [label, "rate", "success", "p50", "p99", "errors"].map((head) => el("th", { text: head })))),
    el("tbody", {}, rows.map((row) => el("tr", { class: health(row) }, [
      el("td", { text: row[label] || "(unknown)" }),
      el("td", { text: formatRate(row.rps) }),
      el("td", { text: formatPercent(1 - row.errorRate) }),
      el("td", { text: formatMs(row.latencyMs.p50) }),
      el("td", { text: formatMs(row.latencyMs.p99) }),
      el("td", { text: String(row.errors) }),
    ]))),
  ]);
}

/**
 * Links to the slowest and the failed traces through this edge or node. "Slowest": the spans at
 * or above the p90 (less 2%, the sketch's error, so the slowest request itself always qualifies),
 * longest trace first.
 */
function exampleTraces(search, p90Ms, window) {
  const box = el("div", { class: "examples" });
  const start = startMicros(window);
  const slowParams = { ...search, start, limit: 50, minDuration: p90Ms ? `${Math.floor(p90Ms * 980)}us` : undefined };
  const failedParams = { ...search, start, limit: 5, error: "true" };
  const list = async (title, params, order, id) => {
    const section = el("div", { class: "example-list", id }, [el("h3", {}, [title, " ", el("a", { href: `#/search?${searchQuery(params)}`, class: "more", text: "search →" })])]);
    box.append(section);
    try {
      let traces = await api.traces(params);
      if (order) traces = traces.sort(order);
      section.append(traces.length ? el("ul", {}, traces.slice(0, 5).map(traceLink)) : el("p", { class: "muted", text: "none in this window" }));
    } catch (error) {
      section.append(el("p", { class: "error", text: error.message }));
    }
  };
  list("Slowest traces", slowParams, (a, b) => Number(BigInt(b.durationNano) - BigInt(a.durationNano)), "slowest-traces");
  list("Failed traces", failedParams, null, "failed-traces");
  return box;
}

function searchQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && key !== "start") query.append(key, String(value));
  return query.toString();
}
