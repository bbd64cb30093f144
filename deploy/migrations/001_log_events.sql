-- 001_log_events.sql - stored log events, range-partitioned by day on ts.
--
-- Each migration is one transaction that records itself in schema_migrations,
-- so it runs the same under deploy/local/infra.py's apply_migrations() and as
-- a file in a stock postgres image's /docker-entrypoint-initdb.d/.
--
-- Daily partitions are named log_events_YYYYMMDD (UTC days). Rows whose day
-- has no partition yet land in log_events_default; logpipe_ensure_partitions()
-- moves such rows into the new partition when it creates it, so calling it is
-- always safe. The consumer calls it periodically (for example (1, 7)).
BEGIN;

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS log_events (
    id                uuid        NOT NULL,
    ts                timestamptz NOT NULL,
    received_at       timestamptz,
    stored_at         timestamptz DEFAULT now(),
    level             text,
    level_rank        smallint,
    service           text,
    host              text,
    source_ip         text,
    tenant            text,
    correlation_id    text,
    message           text,
    attributes        jsonb,
    enrichment        jsonb,
    enrichment_status text,
    kafka_topic       text,
    kafka_partition   int,
    kafka_offset      bigint,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS log_events_default PARTITION OF log_events DEFAULT;

CREATE INDEX IF NOT EXISTS log_events_ts_idx         ON log_events (ts DESC);
CREATE INDEX IF NOT EXISTS log_events_service_ts_idx ON log_events (service, ts DESC);
CREATE INDEX IF NOT EXISTS log_events_level_ts_idx   ON log_events (level_rank, ts DESC);
CREATE INDEX IF NOT EXISTS log_events_host_ts_idx    ON log_events (host, ts DESC);
CREATE INDEX IF NOT EXISTS log_events_tenant_ts_idx  ON log_events (tenant, ts DESC);
CREATE INDEX IF NOT EXISTS log_events_message_fts_idx
    ON log_events USING gin (to_tsvector('simple', message));

-- Create the daily partitions from days_back days before today (UTC) to
-- days_ahead days after it; returns how many it created. Serialised by an
-- advisory lock so that several consumers may call it at once.
CREATE OR REPLACE FUNCTION logpipe_ensure_partitions(days_back int, days_ahead int)
RETURNS int
LANGUAGE plpgsql
AS $fn$
DECLARE
    today   date := (now() AT TIME ZONE 'UTC')::date;
    d       date;
    lo      timestamptz;
    hi      timestamptz;
    part    text;
    created int := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('logpipe_ensure_partitions'));
    FOR i IN -days_back .. days_ahead LOOP
        d    := today + i;
        part := 'log_events_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NOT NULL THEN
            CONTINUE;
        END IF;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        -- Build the partition detached, move that day's rows out of the
        -- default partition, then attach (which would fail while the default
        -- partition still held rows of that range).
        EXECUTE format('CREATE TABLE %I (LIKE log_events INCLUDING DEFAULTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM log_events_default
                            WHERE ts >= %L AND ts < %L RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', lo, hi, part);
        EXECUTE format('ALTER TABLE log_events ATTACH PARTITION %I
                        FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

SELECT logpipe_ensure_partitions(1, 7);

INSERT INTO schema_migrations (version, name) VALUES ('001', 'log_events')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
