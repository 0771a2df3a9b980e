-- Edge windows in [start_s, end_s) summed per step (step 0 starts at start_s) and per edge, view
-- and detail: counts add, the latency sketch's buckets merge with sumMap.
-- Output names differ from the column names so no alias shadows a column inside an aggregate.
SELECT
    intDiv(toUInt32(window_start) - %(start_s)s, %(step_s)s) AS step,
    client, server, connection_type, view, detail,
    sum(requests) AS sum_requests,
    sum(errors) AS sum_errors,
    sum(retries) AS sum_retries,
    sum(request_bytes) AS sum_request_bytes,
    sum(response_bytes) AS sum_response_bytes,
    sum(latency_zeros) AS sum_latency_zeros,
    sum(latency_sum_ns) AS sum_latency_sum_ns,
    min(latency_min_ns) AS min_latency_min_ns,
    max(latency_max_ns) AS max_latency_max_ns,
    tupleElement(sumMap(latency_buckets, latency_counts), 1) AS merged_buckets,
    tupleElement(sumMap(latency_buckets, latency_counts), 2) AS merged_counts
FROM edge_windows
WHERE window_start >= toDateTime(%(start_s)s, 'UTC')
  AND window_start < toDateTime(%(end_s)s, 'UTC')
  AND client = %(client)s                                  -- if client
  AND server = %(server)s                                  -- if server
  AND view = %(view)s                                      -- if view
GROUP BY step, client, server, connection_type, view, detail
ORDER BY step, client, server, connection_type, view, detail
