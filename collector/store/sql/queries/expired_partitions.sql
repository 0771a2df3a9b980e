-- Day partitions (YYYYMMDD) older than the cutoff day, in any of the day-partitioned tables.
SELECT DISTINCT partition
FROM system.parts
WHERE database = currentDatabase()
  AND active
  AND table IN ('spans', 'trace_times', 'span_search_hashed', 'operations', 'edge_windows')
  AND toUInt32(partition) < %(cutoff_day)s
ORDER BY partition
