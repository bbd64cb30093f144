-- 008_log_events_ts_ascending.sql - the (ts, id) index in ascending order.
--
-- Events arrive in time order, so each new row has the largest (ts, id) so
-- far.  In 003's (ts DESC, id DESC) that is the index's first leaf page:
-- every insert descends from the root to it, and each split halves it, so
-- the index stays half full.  In ascending order the same row goes on the
-- last leaf page, which PostgreSQL remembers (no descent) and splits at
-- its end, leaving the pages it fills full.  Measured on 1,500,000
-- generator-like rows with the whole index set (docs/benchmarks.md): the
-- index 104 MB -> 58 MB, about 1 µs less of the COPY backend's CPU per row.
--
-- A page is still read in (ts DESC, id DESC) order: the planner scans the
-- index backward, which a btree does as cheaply as forward, and the Merge
-- Append of the partitions' scans still stops after limit + 1 rows.  The
-- other btree indexes keep their order: their new rows go in the middle of
-- the index (at each service's, host's or level's newest rows) either way.
--
-- CREATE INDEX on a partitioned table holds back inserts while it builds
-- (as 003's did): on a large table, apply it at a quiet time.
BEGIN;

CREATE INDEX IF NOT EXISTS log_events_ts_id_asc_idx ON log_events (ts, id);
DROP INDEX IF EXISTS log_events_ts_id_idx;

INSERT INTO schema_migrations (version, name) VALUES ('008', 'log_events_ts_ascending')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
