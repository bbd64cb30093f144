-- 002_metadata.sql - host and service metadata, owned by metadata-svc and
-- read by the enricher (through metadata-svc and its Redis cache).
BEGIN;

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS host_metadata (
    hostname    text        PRIMARY KEY,
    ip_address  text        UNIQUE,         -- NULL allowed, unique when set
    datacenter  text,
    environment text,
    cost_center text,
    tags        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS service_metadata (
    name       text        PRIMARY KEY,
    team       text,
    owner      text,
    tier       text,
    tags       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- updated_at follows every UPDATE, whatever the writer sends.
CREATE OR REPLACE FUNCTION logpipe_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$fn$;

DROP TRIGGER IF EXISTS host_metadata_touch ON host_metadata;
CREATE TRIGGER host_metadata_touch BEFORE UPDATE ON host_metadata
    FOR EACH ROW EXECUTE FUNCTION logpipe_touch_updated_at();
DROP TRIGGER IF EXISTS service_metadata_touch ON service_metadata;
CREATE TRIGGER service_metadata_touch BEFORE UPDATE ON service_metadata
    FOR EACH ROW EXECUTE FUNCTION logpipe_touch_updated_at();

INSERT INTO schema_migrations (version, name) VALUES ('002', 'metadata')
    ON CONFLICT (version) DO NOTHING;

COMMIT;
