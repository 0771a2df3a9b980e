-- Migration 3: trace search matches 64-bit hashes of the tags instead of a second copy of their texts.
-- Every span's tags (13 texts, ~410 bytes in bench/ingest.py's spans) were stored twice, in spans
-- and in span_search; the copy cost about 1 us per span at insert and again in every background
-- merge. Search only asks "does one span have all these exact texts", which hashes answer (a false
-- match needs a 64-bit collision); the texts stay in spans for reading traces.
-- A new table replaces span_search: on 18.16 a view must fill every column of its target, and an
-- empty "tags" in the view would shadow the spans column it reads.

-- requires: experimental_low_cardinality
SET allow_experimental_low_cardinality_type = 1;

CREATE TABLE IF NOT EXISTS span_search_hashed (
    trace_id String,
    service LowCardinality(String),
    name LowCardinality(String),
    kind UInt8,
    start_ns UInt64,
    duration_ns UInt64,
    is_error UInt8,
    tag_hashes Array(UInt64)
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(start_ns, 1000000000), 'UTC'))
ORDER BY (service, name, start_ns);

-- requires: skip_indexes
ALTER TABLE span_search_hashed ADD INDEX IF NOT EXISTS tag_hashes_bloom tag_hashes TYPE bloom_filter(0.01) GRANULARITY 1;

-- The new view starts before the old one stops, so no insert in between misses the search table;
-- spans written in between are copied twice, which search groups away (GROUP BY trace_id).
CREATE MATERIALIZED VIEW IF NOT EXISTS span_search_hashed_mv TO span_search_hashed AS
SELECT trace_id, service, name, kind, start_ns, duration_ns, status_code = 2 OR has(tags, 'error=true') AS is_error,
       arrayMap(tag -> cityHash64(tag), tags) AS tag_hashes
FROM spans;

DROP TABLE IF EXISTS span_search_mv;

-- Filled from spans, not from the old span_search: a migration interrupted after the DROP below runs
-- again from the top, and the copy must still work (rows copied twice are grouped away too).
INSERT INTO span_search_hashed
SELECT trace_id, service, name, kind, start_ns, duration_ns, status_code = 2 OR has(tags, 'error=true'),
       arrayMap(tag -> cityHash64(tag), tags)
FROM spans;

DROP TABLE IF EXISTS span_search
