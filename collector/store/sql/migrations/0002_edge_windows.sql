-- Migration 2: the service graph's 10-second windows, kept for history (collector/graph/history.py).
-- A window's numbers are written as deltas: the whole window once it is settled, and later rows
-- for requests that arrived after that; a read sums every row of a window (sumMap merges the
-- latency sketch's bucket counts), so deltas never need rewriting.
-- view: 'edge' (detail ''), 'endpoint' (detail = callee endpoint) or 'route' (detail = route).
-- Partitioned by UTC day like the span tables (partition id YYYYMMDD), so retention drops it with them.
CREATE TABLE IF NOT EXISTS edge_windows (
    window_start DateTime('UTC'),
    client String,
    server String,
    connection_type String,
    view String,
    detail String,
    requests UInt64,
    errors UInt64,
    retries UInt64,
    request_bytes UInt64,
    response_bytes UInt64,
    latency_zeros UInt64,
    latency_sum_ns UInt64,
    latency_min_ns UInt64,
    latency_max_ns UInt64,
    latency_buckets Array(Int16),
    latency_counts Array(UInt64)
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (client, server, connection_type, view, detail, window_start)
