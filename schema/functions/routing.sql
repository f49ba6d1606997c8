-- Event routing and run control (#19): payload filters kept compiled from scripts.metadata.
-- Applied after triggers.sql, idempotently, whenever its content changes.

-- scripts.metadata.event_filters {event_type: "<SQL/JSON path predicate>"} → jsrt_event_filters.
-- The cast to jsonpath is PostgreSQL's own check: a filter it cannot parse refuses the save
-- with its message (jsrt validates before writing, so this is the rule for SQL writers).
CREATE OR REPLACE FUNCTION jsrt_sync_event_filters() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_filters JSONB := NEW.metadata->'event_filters';
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.metadata->'event_filters' IS NOT DISTINCT FROM v_filters THEN
        RETURN NULL;
    END IF;
    DELETE FROM jsrt_event_filters WHERE script_id = NEW.id;
    IF jsonb_typeof(v_filters) = 'object' THEN
        INSERT INTO jsrt_event_filters (script_id, event_type, tenant_id, filter)
        SELECT NEW.id, f.key, NEW.tenant_id, (f.value #>> '{}')::jsonpath
        FROM jsonb_each(v_filters) f
        WHERE jsonb_typeof(f.value) = 'string';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_event_filters ON scripts;
CREATE TRIGGER jsrt_scripts_event_filters AFTER INSERT OR UPDATE OF metadata ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_sync_event_filters();
