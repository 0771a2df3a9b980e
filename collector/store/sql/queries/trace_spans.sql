-- Whole traces by id: the primary key (trace_id, start_ns) of spans makes this a lookup, not a scan.
SELECT
    trace_id, span_id, parent_span_id, trace_state, name, kind, service, start_ns, duration_ns,
    status_code, status_message, attributes, resource_attributes, scope_name, scope_version,
    scope_attributes, events, links, tags
FROM spans
WHERE trace_id IN %(trace_ids)s
ORDER BY trace_id, start_ns, span_id
