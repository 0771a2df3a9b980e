-- Migration 4: spans arrive in a Null-engine input table and its views fill every stored table, so
-- the tags (13 key=value texts, ~300 of ~810 bytes per bench/ingest.py span) are no longer stored.
-- They are the same texts as the attribute JSON columns and only search needs them, as the hashes
-- span_search_hashed keeps (migration 3); storing them in spans cost about 2.5 us of engine CPU per
-- span (insert, compression and every background merge), a quarter of the ingest budget.
-- The views that read spans are replaced by views that read span_input; spans itself is filled by
-- a view too, with an empty tags array: spans keeps its tags column (rows written before this keep
-- their texts until retention drops them) because 18.16 has no ALTER ... DROP COLUMN IF EXISTS, and
-- a column of empty arrays costs next to nothing. Every step may run again (an interrupted migration
-- completes on the next start).

-- requires: experimental_low_cardinality
SET allow_experimental_low_cardinality_type = 1;

-- The input: every column of spans.model.COLUMNS, stored nowhere; typed as in spans, since on 18.16 a
-- view's columns must have exactly the types of its target's (LowCardinality included).
CREATE TABLE IF NOT EXISTS span_input (
    trace_id String,
    span_id String,
    parent_span_id String,
    trace_state String,
    name LowCardinality(String),
    kind UInt8,
    service LowCardinality(String),
    start_ns UInt64,
    duration_ns UInt64,
    status_code UInt8,
    status_message String,
    attributes String,
    resource_attributes String,
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    scope_attributes String,
    events String,
    links String,
    tags Array(String)
) ENGINE = Null;

-- The old views read spans: once spans is filled from span_input they would copy every span again.
DROP TABLE IF EXISTS trace_times_mv;

DROP TABLE IF EXISTS span_search_hashed_mv;

DROP TABLE IF EXISTS operations_mv;

-- (18.16 wants every column of a view's target filled by the view.)
CREATE MATERIALIZED VIEW IF NOT EXISTS spans_from_input_mv TO spans AS
SELECT trace_id, span_id, parent_span_id, trace_state, name, kind, service, start_ns, duration_ns,
       status_code, status_message, attributes, resource_attributes, scope_name, scope_version,
       scope_attributes, events, links, emptyArrayString() AS tags
FROM span_input;

CREATE MATERIALIZED VIEW IF NOT EXISTS trace_times_from_input_mv TO trace_times AS
SELECT trace_id, min(start_ns) AS first_start_ns, max(start_ns) AS last_start_ns
FROM span_input
GROUP BY trace_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS span_search_from_input_mv TO span_search_hashed AS
SELECT trace_id, service, name, kind, start_ns, duration_ns, status_code = 2 OR has(tags, 'error=true') AS is_error,
       arrayMap(tag -> cityHash64(tag), tags) AS tag_hashes
FROM span_input;

CREATE MATERIALIZED VIEW IF NOT EXISTS operations_from_input_mv TO operations AS
SELECT DISTINCT toDate(toDateTime(intDiv(start_ns, 1000000000), 'UTC')) AS day, service, name, kind
FROM span_input
