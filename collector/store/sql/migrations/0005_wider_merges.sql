-- Migration 5: the span tables merge wider, so each span is rewritten by fewer background merges.
-- ClickHouse's merge selector joins parts of similar size about merge_selector_base (default 5) at a
-- time, so a span inserted in a 100k-row part is rewritten about log5(parts per day) times before its
-- day's partition settles: ~7 times at one insert per second. Merges were 1.7-2.0 us of engine CPU per
-- merged row in spans and 1.85 in span_search_hashed, a third of the collector's engine work. At 20,
-- a span is rewritten about log20(parts per day) ~ 4 times; the price is more parts alive at a time
-- (up to ~20 per size level instead of ~5), which searches and trace lookups open (bench/query.py).
-- Servers without the setting (18.16 up to 25.5 as gated here) keep the default.

-- requires: merge_selector_base
ALTER TABLE spans MODIFY SETTING merge_selector_base = 20;

-- requires: merge_selector_base
ALTER TABLE span_search_hashed MODIFY SETTING merge_selector_base = 20;

-- requires: merge_selector_base
ALTER TABLE trace_times MODIFY SETTING merge_selector_base = 20
