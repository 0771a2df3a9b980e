// The collector's HTTP API, same origin. Every call resolves to the parsed JSON or throws an Error
// carrying the API's own message (its 400 answers name the bad parameter).

export class ApiError extends Error {}

/** GET path with query parameters; a value that is an array repeats the parameter. */
export async function getJson(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [value].flat()) {
      if (one !== undefined && one !== null && one !== "") query.append(name, String(one));
    }
  }
  const url = query.toString() ? `${path}?${query}` : path;
  let reply;
  try {
    reply = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (error) {
    throw new ApiError(`collector unreachable: ${error.message}`);
  }
  const body = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(body && body.error ? body.error : `${url}: HTTP ${reply.status}`);
  return body;
}

export const api = {
  services: () => getJson("/api/v1/services").then((body) => body.services),
  operations: (service) =>
    getJson(`/api/v1/services/${encodeURIComponent(service)}/operations`).then((body) => body.operations),
  traces: (params) => getJson("/api/v1/traces", params).then((body) => body.traces),
  trace: (traceId) => getJson(`/api/v1/traces/${encodeURIComponent(traceId)}`),
  graph: (params) => getJson("/api/v1/graph", params),
  edges: (params) => getJson("/api/v1/edges", params),
  hints: () => getJson("/api/v1/hints").then((body) => body.services),
};
