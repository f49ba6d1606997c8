-- Payload filters (#19): scripts.metadata.event_filters {event_type: "<SQL/JSON path
-- predicate>"}, kept here compiled, one row per (script, event type), by a trigger on scripts
-- (schema/functions/routing.sql). The cast to jsonpath happens once, when the script is saved
-- (a filter PostgreSQL cannot parse refuses the save with PostgreSQL's own message), never in
-- the fan-out: a claim can then never fail on a tenant's filter.

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_event_filters (
    script_id UUID NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
    event_type VARCHAR(255) NOT NULL,
    tenant_id UUID NOT NULL,
    filter JSONPATH NOT NULL,
    PRIMARY KEY (script_id, event_type)
);

COMMENT ON TABLE jsrt_event_filters IS
    'Payload filter per (script, event type), from scripts.metadata.event_filters: an event that does not match creates no execution';

-- Filters of the scripts that exist already (valid ones: an invalid one was never honoured).
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT s.id, s.tenant_id, f.key, f.value FROM scripts s
             CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(s.metadata->'event_filters') = 'object'
                                                THEN s.metadata->'event_filters' ELSE '{}' END) f
             WHERE jsonb_typeof(f.value) = 'string' LOOP
        BEGIN
            INSERT INTO jsrt_event_filters (script_id, event_type, tenant_id, filter)
            VALUES (r.id, r.key, r.tenant_id, (r.value #>> '{}')::jsonpath);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'script %: event filter for % ignored: %', r.id, r.key, SQLERRM;
        END;
    END LOOP;
END $$;
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TRIGGER IF EXISTS jsrt_scripts_event_filters ON scripts;
DROP FUNCTION IF EXISTS jsrt_sync_event_filters();
DROP TABLE IF EXISTS jsrt_event_filters;
-- +migrate StatementEnd
