-- 003_log_events_order.sql - indexes in the exact order of a page, and a
-- partition creation that cannot race with inserts.
--
-- A page of GET /api/logs is ordered by (ts DESC, id DESC): id breaks ties
-- between events of the same microsecond, which keyset pagination needs.
-- 001's indexes end at ts, so the planner could not read a page straight
-- off them: it sorted every matching row instead (a seq scan and a top-N
-- sort of the whole table for the newest page).  These end with id so that
-- the merge of the partitions' index scans yields the page's order and the
-- query stops after limit + 1 rows.  They replace 001's, which they cover.
BEGIN;

CREATE INDEX IF NOT EXISTS log_events_ts_id_idx ON log_events (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS log_events_service_ts_id_idx
    ON log_events (service, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS log_events_level_ts_id_idx
    ON log_events (level_rank, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS log_events_host_ts_id_idx ON log_events (host, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS log_events_tenant_ts_id_idx
    ON log_events (tenant, ts DESC, id DESC);

DROP INDEX IF EXISTS log_events_ts_idx;
DROP INDEX IF EXISTS log_events_service_ts_idx;
DROP INDEX IF EXISTS log_events_level_ts_idx;
DROP INDEX IF EXISTS log_events_host_ts_idx;
DROP INDEX IF EXISTS log_events_tenant_ts_idx;

-- As in 001, plus a lock: between moving a day's rows out of the default
-- partition and attaching the new partition, an insert of a row of that
-- day would land in the default partition again and make the ATTACH fail.
-- Inserts into the default partition now wait for the few statements
-- below; days that already have their partition take no lock at all.
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
        LOCK TABLE log_events_default IN SHARE ROW EXCLUSIVE MODE;
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

INSERT INTO schema_migrations (version, name) VALUES ('003', 'log_events_order')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
