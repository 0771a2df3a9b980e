-- Whole traces by id: the primary key (trace_id, start_ns) of spans makes this a lookup, and the
-- traces' time span from trace_times skips the partitions and parts outside it.
-- Tags are not stored since migration 4 (older rows' texts are ignored): every span reads back with none.
SELECT
    trace_id, span_id, parent_span_id, trace_state, name, kind, service, start_ns, duration_ns,
    status_code, status_message, attributes, resource_attributes, scope_name, scope_version,
    scope_attributes, events, links, emptyArrayString() AS tags
FROM spans
WHERE trace_id IN %(trace_ids)s
  AND start_ns >= (SELECT min(first_start_ns) FROM trace_times WHERE trace_id IN %(trace_ids)s)
  AND start_ns <= (SELECT max(last_start_ns) FROM trace_times WHERE trace_id IN %(trace_ids)s)
ORDER BY trace_id, start_ns, span_id
