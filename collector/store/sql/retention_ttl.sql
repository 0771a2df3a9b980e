-- Retention as TTL, on servers that have it: expired parts go away in background merges.
-- Existing parts are not rewritten now (SpanStore.drop_expired removes whole old days instead).
SET materialize_ttl_after_modify = 0;
ALTER TABLE spans MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE spans MODIFY TTL toDateTime(intDiv(start_ns, 1000000000), 'UTC') + toIntervalDay(%(retention_days)s);
ALTER TABLE trace_times MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE trace_times MODIFY TTL toDateTime(intDiv(last_start_ns, 1000000000), 'UTC') + toIntervalDay(%(retention_days)s);
ALTER TABLE span_search_hashed MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE span_search_hashed MODIFY TTL toDateTime(intDiv(start_ns, 1000000000), 'UTC') + toIntervalDay(%(retention_days)s);
ALTER TABLE operations MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE operations MODIFY TTL day + toIntervalDay(%(retention_days)s);
ALTER TABLE edge_windows MODIFY SETTING ttl_only_drop_parts = 1;
ALTER TABLE edge_windows MODIFY TTL window_start + toIntervalDay(%(retention_days)s)
