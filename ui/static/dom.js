// Building the page. Data from spans and the graph only ever reaches the document as text nodes
// or attribute values set through the DOM (never parsed as HTML), so a span named
// "<img src=x onerror=alert(1)>" is shown as those characters.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.setAttribute("class", value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("a", {href: "#/x", text: name}) or el("div", {}, [children]). */
export function el(tag, attrs, children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as el(). */
export function svg(tag, attrs, children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** "1.2 s", "35.4 ms", "812 µs" from nanoseconds. */
export function formatNs(ns) {
  if (ns === null || ns === undefined || Number.isNaN(ns)) return "–";
  const abs = Math.abs(ns);
  if (abs >= 60e9) return `${(ns / 60e9).toFixed(1)} min`;
  if (abs >= 1e9) return `${(ns / 1e9).toFixed(abs >= 10e9 ? 1 : 2)} s`;
  if (abs >= 1e6) return `${(ns / 1e6).toFixed(abs >= 100e6 ? 0 : 1)} ms`;
  if (abs >= 1e3) return `${(ns / 1e3).toFixed(0)} µs`;
  return `${ns} ns`;
}

export function formatMs(ms) {
  return ms === null || ms === undefined ? "–" : formatNs(ms * 1e6);
}

export function formatRate(rps) {
  if (!rps) return "0/s";
  return rps >= 100 ? `${rps.toFixed(0)}/s` : rps >= 1 ? `${rps.toFixed(1)}/s` : `${rps.toFixed(2)}/s`;
}

export function formatPercent(fraction) {
  const pct = fraction * 100;
  return `${Number(pct.toFixed(pct > 99 || pct < 1 ? 2 : 1))}%`;
}

/** Local wall-clock time of a Unix-nanosecond decimal string or a millisecond number. */
export function formatTime(ms) {
  const date = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export function nanosToMs(text) {
  return Number(BigInt(text) / 1000000n);
}

/** A value from an attribute object as one line of text (objects and arrays as JSON). */
export function valueText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** Health of a request stream by its error rate: "ok", "warn", "bad", or "idle" without requests. */
export function health(metrics) {
  if (!metrics || !metrics.requests) return "idle";
  if (metrics.errorRate >= 0.05) return "bad";
  if (metrics.errorRate >= 0.01) return "warn";
  return "ok";
}

/** A two-column table of key/value pairs, keys sorted. */
export function attributeTable(attributes) {
  const keys = Object.keys(attributes || {}).sort();
  if (!keys.length) return el("p", { class: "muted", text: "none" });
  return el("table", { class: "attrs" }, keys.map((key) =>
    el("tr", {}, [el("th", { text: key }), el("td", { text: valueText(attributes[key]) })])));
}
