-- 006_log_events_tenant_partial.sql - the tenant index holds only the rows
-- that have a tenant.
--
-- Every index of log_events was measured (docs/storage.md, Indexes; figures
-- in docs/benchmarks.md): its cost to COPY and the queries it serves.  All
-- are kept but this one changes.  Events without a tenant (a deployment
-- without tenants; the generator's 256-byte events, whose tenant is trimmed
-- away) made (tenant, ts, id) a btree of NULLs that no query reads: every
-- tenant filter is "tenant = $n", which only a row with a tenant matches,
-- so the planner uses the partial index for it just as it used the full
-- one.  Rows with a tenant cost what they did.
--
-- CREATE INDEX on a partitioned table holds back inserts while it builds
-- (as 003's did): on a large table, apply it at a quiet time.
BEGIN;

CREATE INDEX IF NOT EXISTS log_events_tenant_set_ts_id_idx
    ON log_events (tenant, ts DESC, id DESC) WHERE tenant IS NOT NULL;
DROP INDEX IF EXISTS log_events_tenant_ts_id_idx;

INSERT INTO schema_migrations (version, name) VALUES ('006', 'log_events_tenant_partial')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
