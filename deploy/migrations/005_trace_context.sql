-- 005_trace_context.sql - W3C trace context of stored events.
--
-- The producer keeps a traceparent header's (or an OTLP record's) trace and
-- span ids as the event's trace_id and span_id; the consumer stores them
-- here so that GET /api/logs?trace_id= goes from a trace to its logs.  The
-- index is partial: most events of a system without tracing have none.
-- Numbered 005 because 004 is taken by another change.
BEGIN;

ALTER TABLE log_events ADD COLUMN IF NOT EXISTS trace_id text;
ALTER TABLE log_events ADD COLUMN IF NOT EXISTS span_id text;

CREATE INDEX IF NOT EXISTS log_events_trace_id_idx
    ON log_events (trace_id, ts DESC, id DESC) WHERE trace_id IS NOT NULL;

INSERT INTO schema_migrations (version, name) VALUES ('005', 'trace_context')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
