-- 007_log_events_json.sql - attributes and enrichment are stored as json,
-- not jsonb.
--
-- No statement reads inside either column: the query API returns them as
-- text, and no index or filter uses them.  jsonb paid for a binary form
-- nobody used: jsonb_in cost about twice json_in per row in COPY (6.4-9.0
-- against 3.1-4.0 µs for a generator-like pair of objects, psql \copy of
-- 300,000 rows, docs/benchmarks.md), about a twentieth of PostgreSQL's
-- whole cost of storing an event.  json keeps the text as the consumer
-- wrote it (jansson's compact form, keys in the order the client sent
-- them), so the API now returns attributes in that order rather than
-- jsonb's.
--
-- Changing a column's type rewrites every partition and rebuilds its
-- indexes, holding inserts back meanwhile (the consumer waits, Kafka keeps
-- the events): on a large table, apply it at a quiet time.
BEGIN;

DO $$
BEGIN
    IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'log_events'::regclass AND attname = 'attributes') = 'jsonb' THEN
        ALTER TABLE log_events
            ALTER COLUMN attributes TYPE json USING attributes::json,
            ALTER COLUMN enrichment TYPE json USING enrichment::json;
    END IF;
END
$$;

INSERT INTO schema_migrations (version, name) VALUES ('007', 'log_events_json')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
