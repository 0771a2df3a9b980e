-- Traces with at least one span matching every given filter, newest match first.
-- A line ending in "-- if NAME" is kept only when parameter NAME is given.
-- Tags: all wanted key=value texts must be in the tags of one span (own, resource, scope, event, link),
-- compared by their 64-bit hashes (migration 3).
SELECT trace_id, max(start_ns) AS latest_start_ns
FROM span_search_hashed
WHERE 1
  AND service = %(service)s                                -- if service
  AND name = %(operation)s                                 -- if operation
  AND start_ns >= %(start_ns)s                             -- if start_ns
  AND start_ns <= %(end_ns)s                               -- if end_ns
  AND duration_ns >= %(min_duration_ns)s                   -- if min_duration_ns
  AND duration_ns <= %(max_duration_ns)s                   -- if max_duration_ns
  AND hasAll(tag_hashes, arrayMap(tag -> cityHash64(tag), %(tags)s)) -- if tags
  AND is_error = 1                                         -- if only_errors
  AND is_error = 0                                         -- if only_non_errors
GROUP BY trace_id
ORDER BY latest_start_ns DESC, trace_id
LIMIT %(limit)s
