// Layered ("Sugiyama-style") layout of the service graph, so that callers sit above callees:
//   1. cycles are broken by reversing DFS back edges (a reversed edge is still drawn caller -> callee);
//   2. each node's layer is its longest path from a node nobody calls;
//   3. an edge spanning several layers gets a dummy point per layer it crosses, so it bends
//      around nodes instead of cutting through them;
//   4. the order within layers is improved by alternating barycenter sweeps, keeping the order
//      with the fewest crossings;
//   5. x positions are relaxed towards neighbours while keeping order and spacing;
//   6. each edge leaves its caller's bottom and enters its callee's top at its own port, spread
//      across the node in the order of the other end, so parallel edges do not pile up.
// Pure: names and edges in, coordinates out (no DOM), so it can be tested alone.

export const NODE_W = 176;
export const NODE_H = 52;
const DUMMY_W = 24;
const GAP_X = 64;
const LAYER_GAP = 170;
const MARGIN = 40;
const SWEEPS = 12;
const RELAX_ROUNDS = 8;

/**
 * @param {string[]} names
 * @param {{id: string, source: string, target: string}[]} edges
 * @returns {{nodes: Map<string, {x, y, layer}>, edges: Map<string, {points, reversed, selfLoop}>, width, height, crossings}}
 */
export function layoutGraph(names, edges) {
  const sorted = [...new Set(names)].sort();
  const reversed = findBackEdges(sorted, edges);
  const dagEdges = edges
    .filter((edge) => edge.source !== edge.target)
    .map((edge) => (reversed.has(edge.id)
      ? { id: edge.id, from: edge.target, to: edge.source }
      : { id: edge.id, from: edge.source, to: edge.target }));
  const layerOf = longestPathLayers(sorted, dagEdges);

  // Layered graph with dummy chains.
  const vertices = new Map(); // key -> {key, layer, width, dummy}
  for (const name of sorted) vertices.set(name, { key: name, layer: layerOf.get(name), width: NODE_W, dummy: false });
  const chains = new Map(); // edge id -> [vertex keys from top to bottom]
  const links = []; // [upper key, lower key] between adjacent layers
  for (const edge of dagEdges) {
    const chain = [edge.from];
    for (let layer = layerOf.get(edge.from) + 1; layer < layerOf.get(edge.to); layer++) {
      const key = `\u0000${edge.id}\u0000${layer}`;
      vertices.set(key, { key, layer, width: DUMMY_W, dummy: true });
      chain.push(key);
    }
    chain.push(edge.to);
    chains.set(edge.id, chain);
    for (let i = 1; i < chain.length; i++) links.push([chain[i - 1], chain[i]]);
  }

  const layers = orderLayers(vertices, links);
  const x = placeX(layers, vertices, links);
  const crossings = countAllCrossings(layers, links);

  const yOf = (layer) => MARGIN + layer * LAYER_GAP;
  const nodes = new Map(sorted.map((name) => [name, { x: x.get(name), y: yOf(layerOf.get(name)), layer: layerOf.get(name) }]));
  const width = Math.max(MARGIN * 2 + NODE_W, ...[...vertices.keys()].map((key) => x.get(key) + vertices.get(key).width / 2 + MARGIN));
  const height = MARGIN * 2 + NODE_H + Math.max(0, ...sorted.map((name) => layerOf.get(name))) * LAYER_GAP;

  // Points: dummy centres, and ports on the real nodes.
  const ports = assignPorts(chains, vertices, x, sorted);
  const routed = new Map();
  for (const edge of edges) {
    if (edge.source === edge.target) {
      const node = nodes.get(edge.source);
      routed.set(edge.id, { points: [{ x: node.x + NODE_W / 2, y: node.y + NODE_H / 2 }], reversed: false, selfLoop: true });
      continue;
    }
    const chain = chains.get(edge.id);
    const points = chain.map((key, index) => {
      const vertex = vertices.get(key);
      const y = yOf(vertex.layer);
      if (vertex.dummy) return { x: x.get(key), y: y + NODE_H / 2 };
      if (index === 0) return { x: x.get(key) + ports.get(`${edge.id}\u0000out`), y: y + NODE_H };
      return { x: x.get(key) + ports.get(`${edge.id}\u0000in`), y };
    });
    const isReversed = reversed.has(edge.id);
    routed.set(edge.id, { points: isReversed ? points.reverse() : points, reversed: isReversed, selfLoop: false });
  }
  return { nodes, edges: routed, width, height, crossings };
}

/** Ids of the edges that close a cycle in a DFS started from uncalled nodes first. */
function findBackEdges(names, edges) {
  const out = new Map(names.map((name) => [name, []]));
  const called = new Set();
  for (const edge of edges) {
    if (edge.source === edge.target) continue;
    out.get(edge.source).push(edge);
    called.add(edge.target);
  }
  for (const list of out.values()) list.sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  const state = new Map(); // 1 on the stack, 2 done
  const back = new Set();
  const visit = (start) => {
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const list = out.get(top[0]);
      if (top[1] >= list.length) {
        state.set(top[0], 2);
        stack.pop();
        continue;
      }
      const edge = list[top[1]++];
      const seen = state.get(edge.target);
      if (seen === 1) back.add(edge.id);
      else if (!seen) {
        state.set(edge.target, 1);
        stack.push([edge.target, 0]);
      }
    }
  };
  for (const name of names) if (!called.has(name) && !state.has(name)) visit(name);
  for (const name of names) if (!state.has(name)) visit(name);
  return back;
}

function longestPathLayers(names, dagEdges) {
  const preds = new Map(names.map((name) => [name, []]));
  const indegree = new Map(names.map((name) => [name, 0]));
  const succs = new Map(names.map((name) => [name, []]));
  for (const edge of dagEdges) {
    succs.get(edge.from).push(edge.to);
    preds.get(edge.to).push(edge.from);
    indegree.set(edge.to, indegree.get(edge.to) + 1);
  }
  const layer = new Map(names.map((name) => [name, 0]));
  const ready = names.filter((name) => indegree.get(name) === 0);
  while (ready.length) {
    const name = ready.shift();
    for (const next of succs.get(name)) {
      layer.set(next, Math.max(layer.get(next), layer.get(name) + 1));
      indegree.set(next, indegree.get(next) - 1);
      if (indegree.get(next) === 0) ready.push(next);
    }
  }
  return layer;
}

function orderLayers(vertices, links) {
  const depth = Math.max(0, ...[...vertices.values()].map((vertex) => vertex.layer)) + 1;
  const layers = Array.from({ length: depth }, () => []);
  const up = new Map([...vertices.keys()].map((key) => [key, []]));
  const down = new Map([...vertices.keys()].map((key) => [key, []]));
  for (const [upper, lower] of links) {
    down.get(upper).push(lower);
    up.get(lower).push(upper);
  }
  // Initial order: depth-first from the top layer, so related vertices start near each other.
  const seen = new Set();
  const place = (key) => {
    if (seen.has(key)) return;
    seen.add(key);
    layers[vertices.get(key).layer].push(key);
    for (const next of down.get(key)) place(next);
  };
  for (const key of [...vertices.keys()].sort()) if (!up.get(key).length) place(key);
  for (const key of vertices.keys()) place(key);

  let best = layers.map((layer) => [...layer]);
  let bestCrossings = countAllCrossings(layers, links);
  for (let sweep = 0; sweep < SWEEPS && bestCrossings > 0; sweep++) {
    const downward = sweep % 2 === 0;
    const range = downward ? [...Array(depth).keys()].slice(1) : [...Array(depth).keys()].reverse().slice(1);
    for (const index of range) {
      const neighbourLayer = layers[downward ? index - 1 : index + 1];
      const position = new Map(neighbourLayer.map((key, i) => [key, i]));
      const neighbours = downward ? up : down;
      const current = layers[index];
      const barycenter = new Map(current.map((key, i) => {
        const places = neighbours.get(key).map((other) => position.get(other));
        return [key, places.length ? places.reduce((a, b) => a + b, 0) / places.length : i];
      }));
      current.sort((a, b) => barycenter.get(a) - barycenter.get(b));
    }
    const crossings = countAllCrossings(layers, links);
    if (crossings < bestCrossings) {
      bestCrossings = crossings;
      best = layers.map((layer) => [...layer]);
    }
  }
  return best;
}

function countAllCrossings(layers, links) {
  const position = new Map();
  const layerOf = new Map();
  layers.forEach((layer, index) => layer.forEach((key, i) => {
    position.set(key, i);
    layerOf.set(key, index);
  }));
  const byLayer = new Map(); // links join adjacent layers: grouped by the upper end's layer
  for (const [upper, lower] of links) {
    const layer = layerOf.get(upper);
    if (!byLayer.has(layer)) byLayer.set(layer, []);
    byLayer.get(layer).push([position.get(upper), position.get(lower)]);
  }
  let crossings = 0;
  for (const pairs of byLayer.values()) {
    for (let i = 0; i < pairs.length; i++) {
      for (let j = i + 1; j < pairs.length; j++) {
        const [a1, b1] = pairs[i];
        const [a2, b2] = pairs[j];
        if ((a1 - a2) * (b1 - b2) < 0) crossings++;
      }
    }
  }
  return crossings;
}

/** Centre x of every vertex: packed left to right, then pulled towards neighbours, order kept. */
function placeX(layers, vertices, links) {
  const x = new Map();
  const neighbours = new Map([...vertices.keys()].map((key) => [key, { up: [], down: [] }]));
  for (const [upper, lower] of links) {
    neighbours.get(upper).down.push(lower);
    neighbours.get(lower).up.push(upper);
  }
  const separation = (a, b) => (vertices.get(a).width + vertices.get(b).width) / 2 + (vertices.get(a).dummy && vertices.get(b).dummy ? 12 : GAP_X);
  const widest = Math.max(...layers.map((layer) => layer.reduce((sum, key) => sum + vertices.get(key).width + GAP_X, 0)));
  for (const layer of layers) {
    const total = layer.reduce((sum, key) => sum + vertices.get(key).width + GAP_X, 0);
    let cursor = (widest - total) / 2;
    for (const key of layer) {
      x.set(key, cursor + vertices.get(key).width / 2);
      cursor += vertices.get(key).width + GAP_X;
    }
  }
  for (let round = 0; round < RELAX_ROUNDS; round++) {
    const order = round % 2 === 0 ? layers : [...layers].reverse();
    for (const layer of order) {
      if (!layer.length) continue;
      const desired = layer.map((key) => {
        const { up, down } = neighbours.get(key);
        const others = round % 2 === 0 ? (up.length ? up : down) : (down.length ? down : up);
        return others.length ? others.reduce((sum, other) => sum + x.get(other), 0) / others.length : x.get(key);
      });
      const placed = [...desired];
      for (let i = 1; i < layer.length; i++) placed[i] = Math.max(placed[i], placed[i - 1] + separation(layer[i - 1], layer[i]));
      for (let i = layer.length - 2; i >= 0; i--) placed[i] = Math.min(placed[i], placed[i + 1] - separation(layer[i], layer[i + 1]));
      const shift = desired.reduce((sum, want, i) => sum + want - placed[i], 0) / layer.length;
      layer.forEach((key, i) => x.set(key, placed[i] + shift));
    }
  }
  const left = Math.min(...[...vertices.keys()].map((key) => x.get(key) - vertices.get(key).width / 2));
  for (const key of x.keys()) x.set(key, x.get(key) - left + MARGIN);
  return x;
}

/** Offsets from a node's centre where each edge leaves (bottom) or enters (top), in the order of the other end. */
function assignPorts(chains, vertices, x, names) {
  const outgoing = new Map(names.map((name) => [name, []]));
  const incoming = new Map(names.map((name) => [name, []]));
  for (const [id, chain] of chains) {
    outgoing.get(chain[0]).push([id, x.get(chain[1])]);
    incoming.get(chain[chain.length - 1]).push([id, x.get(chain[chain.length - 2])]);
  }
  const ports = new Map();
  const spread = (list, suffix) => {
    list.sort((a, b) => a[1] - b[1]);
    const usable = NODE_W * 0.7;
    list.forEach(([id], i) => ports.set(`${id}\u0000${suffix}`, list.length === 1 ? 0 : -usable / 2 + (usable * i) / (list.length - 1)));
  };
  for (const name of names) {
    spread(outgoing.get(name), "out");
    spread(incoming.get(name), "in");
  }
  return ports;
}

/** An SVG path through the points with vertical tangents (smooth, leaves and enters nodes straight). */
export function edgePath(points) {
  let path = `M ${points[0].x} ${points[0].y}`;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const half = (b.y - a.y) / 2;
    path += ` C ${a.x} ${a.y + half} ${b.x} ${b.y - half} ${b.x} ${b.y}`;
  }
  return path;
}

/** The point at fraction t of the segment of `points` nearest the middle (used to place a label). */
export function labelPoint(points, t = 0.5) {
  const index = Math.max(1, Math.ceil(points.length / 2));
  const a = points[index - 1];
  const b = points[Math.min(index, points.length - 1)];
  // The cubic with vertical tangents: x follows smoothstep, y is linear-ish; evaluate exactly.
  const half = (b.y - a.y) / 2;
  const cubic = (p0, p1, p2, p3) => (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3;
  return { x: cubic(a.x, a.x, b.x, b.x), y: cubic(a.y, a.y + half, b.y - half, b.y) };
}
