ALTER TABLE spans DROP PARTITION %(partition)s;
ALTER TABLE trace_times DROP PARTITION %(partition)s;
ALTER TABLE span_search_hashed DROP PARTITION %(partition)s;
ALTER TABLE operations DROP PARTITION %(partition)s;
ALTER TABLE edge_windows DROP PARTITION %(partition)s
