// Hand-written SVG charts: time-series lines and a duration-over-time scatter plot.
// Both draw into a fixed viewBox and scale with CSS; axes carry a few "nice" ticks.

import { svg, formatTime } from "./dom.js";

const LINE_SIZE = { W: 520, H: 180 };
const SCATTER_SIZE = { W: 960, H: 240 };
const PAD = { left: 58, right: 12, top: 22, bottom: 26 };

function niceTicks(low, high, count) {
  if (high <= low) high = low + 1;
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  const ticks = [];
  let value = Math.ceil(low / step - 1e-9) * step;
  do {
    ticks.push(value);
    value += step;
  } while (ticks[ticks.length - 1] < high - step * 1e-9);
  return ticks;
}

function clock(ms) {
  return formatTime(ms).slice(11, 19);
}

function frame({ W, H }, title, xScale, yScale, xDomain, yTicks, yFormat) {
  const parts = [svg("text", { x: PAD.left, y: 14, class: "chart-title", text: title })];
  for (const tick of yTicks) {
    const y = yScale(tick);
    parts.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    parts.push(svg("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end", text: yFormat(tick) }));
  }
  for (const tick of niceTicks(xDomain[0], xDomain[1], 4)) {
    const x = xScale(tick);
    if (x < PAD.left || x > W - PAD.right) continue;
    parts.push(svg("text", { x, y: H - 8, class: "tick", "text-anchor": "middle", text: clock(tick) }));
  }
  parts.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  return parts;
}

function scales({ W, H }, xDomain, yMax) {
  const [x0, x1] = xDomain[1] > xDomain[0] ? xDomain : [xDomain[0] - 1, xDomain[0] + 1];
  const xScale = (t) => PAD.left + ((t - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const yScale = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  return { xScale, yScale };
}

/**
 * Lines over time. series: [{name, cssClass, points: [{t: ms, v: number|null}]}]; a null value
 * breaks the line (no data in that step).
 */
export function lineChart({ title, series, yFormat, xDomain }) {
  const values = series.flatMap((one) => one.points.map((point) => point.v)).filter((v) => v !== null);
  const ticks = niceTicks(0, Math.max(0, ...values) || 1, 3);
  const size = LINE_SIZE;
  const { xScale, yScale } = scales(size, xDomain, ticks[ticks.length - 1]);
  const parts = frame(size, title, xScale, yScale, xDomain, ticks, yFormat);
  series.forEach((one, index) => {
    let path = "";
    let pen = "M";
    for (const point of one.points) {
      if (point.v === null) {
        pen = "M";
        continue;
      }
      path += `${pen} ${xScale(point.t).toFixed(1)} ${yScale(point.v).toFixed(1)} `;
      pen = "L";
    }
    if (path) parts.push(svg("path", { d: path, class: `line ${one.cssClass}` }));
    // Dots too: a step with data between two empty ones would otherwise draw nothing.
    for (const point of one.points) {
      if (point.v !== null) parts.push(svg("circle", { cx: xScale(point.t).toFixed(1), cy: yScale(point.v).toFixed(1), r: 1.8, class: `dot ${one.cssClass}` }));
    }
    const legendX = size.W - PAD.right - (series.length - index) * 80;
    parts.push(svg("text", { x: legendX, y: 14, class: `legend ${one.cssClass}`, text: one.name }));
  });
  return svg("svg", { viewBox: `0 0 ${size.W} ${size.H}`, class: "chart", role: "img", "aria-label": title }, parts);
}

/**
 * Trace durations over start time. points: [{t: ms, v: ns, error: bool, label, href}]; a point
 * is a link to its trace.
 */
export function scatterPlot({ title, points, yFormat }) {
  const times = points.map((point) => point.t);
  const xDomain = [Math.min(...times), Math.max(...times)];
  const pad = Math.max(1000, (xDomain[1] - xDomain[0]) * 0.03);
  xDomain[0] -= pad;
  xDomain[1] += pad;
  const ticks = niceTicks(0, Math.max(1, ...points.map((point) => point.v)) * 1.05, 4);
  const size = SCATTER_SIZE;
  const { xScale, yScale } = scales(size, xDomain, ticks[ticks.length - 1]);
  const parts = frame(size, title, xScale, yScale, xDomain, ticks, yFormat);
  for (const point of points) {
    parts.push(svg("a", { href: point.href, class: "point-link" }, [
      svg("circle", {
        cx: xScale(point.t).toFixed(1),
        cy: yScale(point.v).toFixed(1),
        r: 5,
        class: point.error ? "point error" : "point",
      }, [svg("title", { text: point.label })]),
    ]));
  }
  return svg("svg", { viewBox: `0 0 ${size.W} ${size.H}`, class: "chart scatter", role: "img", "aria-label": title }, parts);
}
