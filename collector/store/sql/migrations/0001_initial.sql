-- Migration 1: spans looked up by trace id, each trace's time span, a search index by service and
-- time, and the operations list.
-- Every table is partitioned by UTC day (partition id YYYYMMDD) so retention drops whole days at once.
-- A statement preceded by "-- requires: FEATURE" runs only on servers that have that feature.

-- requires: experimental_low_cardinality
SET allow_experimental_low_cardinality_type = 1;

-- All span columns (spans.model.COLUMNS), ordered by trace id so fetching a trace reads a few
-- small granules per part instead of scanning.
CREATE TABLE IF NOT EXISTS spans (
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
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(start_ns, 1000000000), 'UTC'))
ORDER BY (trace_id, start_ns)
SETTINGS index_granularity = 1024;

-- First and last span start of each trace (a row per trace and insert block). Fetching a trace
-- filters spans on that time span too, so only parts overlapping it are read: inserts arrive
-- roughly in time order, so most parts are skipped by their start_ns min/max.
CREATE TABLE IF NOT EXISTS trace_times (
    trace_id String,
    first_start_ns UInt64,
    last_start_ns UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(first_start_ns, 1000000000), 'UTC'))
ORDER BY trace_id
SETTINGS index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS trace_times_mv TO trace_times AS
SELECT trace_id, min(start_ns) AS first_start_ns, max(start_ns) AS last_start_ns
FROM spans
GROUP BY trace_id;

-- The columns trace search filters on, ordered for "this service (and operation) in this time window".
CREATE TABLE IF NOT EXISTS span_search (
    trace_id String,
    service LowCardinality(String),
    name LowCardinality(String),
    kind UInt8,
    start_ns UInt64,
    duration_ns UInt64,
    is_error UInt8,
    tags Array(String)
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(start_ns, 1000000000), 'UTC'))
ORDER BY (service, name, start_ns);

-- is_error: status ERROR (2) or an error=true tag, worked out once here instead of reading every
-- span's tags in each error search.
CREATE MATERIALIZED VIEW IF NOT EXISTS span_search_mv TO span_search AS
SELECT trace_id, service, name, kind, start_ns, duration_ns, status_code = 2 OR has(tags, 'error=true') AS is_error, tags
FROM spans;

-- One row per (day, service, operation, kind) and insert block; merges fold the duplicates.
CREATE TABLE IF NOT EXISTS operations (
    day Date,
    service LowCardinality(String),
    name LowCardinality(String),
    kind UInt8
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (service, name, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS operations_mv TO operations AS
SELECT DISTINCT toDate(toDateTime(intDiv(start_ns, 1000000000), 'UTC')) AS day, service, name, kind
FROM spans;

-- Tag search: skip granules whose tags cannot hold all the wanted key=value pairs.
-- requires: skip_indexes
ALTER TABLE span_search ADD INDEX IF NOT EXISTS tags_bloom tags TYPE bloom_filter(0.01) GRANULARITY 1;
