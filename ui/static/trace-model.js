// One trace from the API, prepared for the waterfall (pure: no DOM, testable alone).
//
// * Tree: a span's parent is the span whose id is its parentSpanId; the server half of a Zipkin
//   shared span (same id as its client half) hangs under the client half. Spans whose parent never
//   arrived are roots.
// * Clock skew: spans from different hosts can start before their parent or end after it. Such a
//   child is shifted (with its whole subtree, which shares its clock) into its parent's interval
//   and clamped to it if longer; the row is marked and keeps its measured times for the details.
// * Critical path: walking back from a span's end, the child that finished last before the cursor
//   is on the path; the time between children is the span's own.
// * Breakdown: a proxy span's tracemesh.* timings as consecutive segments.

export const BREAKDOWN = [
  { key: "tracemesh.queue_ns", name: "queue" },
  { key: "tracemesh.connect_ns", name: "connect" },
  { key: "tracemesh.retry_delay_ns", name: "retry wait" },
  { key: "tracemesh.first_byte_ns", name: "first byte" },
  { key: "tracemesh.body_ns", name: "body" },
];
export const RETRIES = "tracemesh.retries";

export function buildTrace(trace) {
  const base = BigInt(trace.spans.reduce((min, span) => (BigInt(span.startTimeUnixNano) < BigInt(min) ? span.startTimeUnixNano : min), trace.spans[0].startTimeUnixNano));
  const nodes = trace.spans.map((span, index) => {
    const start = Number(BigInt(span.startTimeUnixNano) - base);
    const duration = Number(span.durationNano);
    return { index, span, start, end: start + duration, duration, children: [], parent: null, depth: 0, skew: 0, clamped: false };
  });
  const byId = new Map();
  for (const node of nodes) {
    if (!byId.has(node.span.spanId)) byId.set(node.span.spanId, []);
    byId.get(node.span.spanId).push(node);
  }
  for (const node of nodes) {
    const sameId = byId.get(node.span.spanId);
    const sharedClient = node.span.kind === "SERVER" && sameId.find((other) => other !== node && other.span.kind === "CLIENT");
    if (sharedClient) node.parent = sharedClient;
    else if (node.span.parentSpanId && byId.has(node.span.parentSpanId)) {
      const candidates = byId.get(node.span.parentSpanId).filter((other) => other !== node);
      node.parent = candidates.find((other) => other.span.kind === "SERVER") || candidates[0] || null;
    }
  }
  breakCycles(nodes);
  for (const node of nodes) if (node.parent) node.parent.children.push(node);
  for (const node of nodes) node.children.sort((a, b) => a.start - b.start || a.index - b.index);
  const roots = nodes.filter((node) => !node.parent).sort((a, b) => a.start - b.start || a.index - b.index);

  for (const root of roots) adjustSkew(root, 0);
  const order = [];
  const walk = (node, depth) => {
    node.depth = depth;
    order.push(node);
    for (const child of node.children) walk(child, depth + 1);
  };
  for (const root of roots) walk(root, 0);

  const critical = new Map();
  for (const root of roots) criticalPath(root, root.end, critical);
  for (const node of order) {
    node.critical = critical.get(node) || [];
    node.breakdown = breakdown(node.span.attributes, node.duration);
  }
  const first = Math.min(...order.map((node) => node.start));
  const last = Math.max(...order.map((node) => node.end));
  for (const node of order) {
    node.start -= first;
    node.end -= first;
    node.critical = node.critical.map(([from, to]) => [from - first, to - first]);
  }
  return { rows: order, total: Math.max(1, last - first), roots };
}

/** A parent chain that loops (bad data) is cut where it closes. */
function breakCycles(nodes) {
  for (const node of nodes) {
    const seen = new Set([node]);
    for (let up = node.parent; up; up = up.parent) {
      if (seen.has(up)) {
        node.parent = null;
        break;
      }
      seen.add(up);
    }
  }
}

function adjustSkew(node, shift) {
  node.start += shift;
  node.end += shift;
  const parent = node.parent;
  if (parent) {
    let extra = 0;
    if (node.start < parent.start) extra = parent.start - node.start;
    else if (node.end > parent.end) extra = Math.max(parent.start - node.start, parent.end - node.end);
    if (extra) {
      node.start += extra;
      node.end += extra;
      node.skew = extra;
      shift += extra;
    }
    if (node.end > parent.end) {
      node.end = parent.end;
      node.clamped = true;
    }
  }
  for (const child of node.children) adjustSkew(child, shift);
}

function criticalPath(node, until, out) {
  const segments = [];
  let cursor = Math.min(until, node.end);
  const remaining = [...node.children];
  while (true) {
    let next = null;
    for (const child of remaining) {
      if (child.start >= cursor) continue;
      if (!next || Math.min(child.end, cursor) > Math.min(next.end, cursor)) next = child;
    }
    if (!next) break;
    remaining.splice(remaining.indexOf(next), 1);
    const childEnd = Math.min(next.end, cursor);
    if (childEnd < cursor) segments.push([childEnd, cursor]);
    criticalPath(next, childEnd, out);
    cursor = next.start;
  }
  if (cursor > node.start) segments.push([node.start, cursor]);
  if (!segments.length && node.end === node.start) segments.push([node.start, node.end]);
  out.set(node, segments.reverse());
}

/** [{name, from, to}] offsets within the span (ns), in order; empty when the span has no timings. */
export function breakdown(attributes, duration) {
  const parts = BREAKDOWN.map(({ key, name }) => ({ name, ns: Number(attributes[key]) || 0 })).filter((part) => part.ns > 0);
  if (!parts.length) return [];
  const sum = parts.reduce((total, part) => total + part.ns, 0);
  const scale = sum > duration && duration > 0 ? duration / sum : 1;
  let cursor = 0;
  return parts.map((part) => {
    const segment = { name: part.name, ns: part.ns, from: cursor, to: cursor + part.ns * scale };
    cursor = segment.to;
    return segment;
  });
}
