-- Per-key ordering (#19): scripts.metadata.concurrency_key is a JSON path into an event's
-- payload (e.g. "$.order_id"); runs of a script with the same key run one at a time, in publish
-- order, across every daemon. The path is kept compiled in jsrt_concurrency_keys by a trigger
-- on scripts (schema/functions/routing.sql); each run carries its key (jsrt_runs.order_key,
-- NULL: unordered), and so does a dead letter (jsrt_dead_letter_state.order_key), which holds
-- its key until it succeeds or is exhausted.

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_concurrency_keys (
    script_id UUID PRIMARY KEY REFERENCES scripts(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL,
    path JSONPATH NOT NULL
);
COMMENT ON TABLE jsrt_concurrency_keys IS
    'Per-key ordering: the JSON path of the payload whose value orders a script''s event runs';

ALTER TABLE jsrt_runs ADD COLUMN order_key TEXT;
CREATE INDEX idx_jsrt_runs_order_key ON jsrt_runs(script_id, order_key)
    WHERE order_key IS NOT NULL;
ALTER TABLE jsrt_dead_letter_state ADD COLUMN order_key TEXT;
CREATE INDEX idx_jsrt_dead_letter_state_order_key ON jsrt_dead_letter_state(order_key)
    WHERE order_key IS NOT NULL AND resolved_at IS NULL;

DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT s.id, s.tenant_id, s.metadata->>'concurrency_key' AS path FROM scripts s
             WHERE jsonb_typeof(s.metadata->'concurrency_key') = 'string' LOOP
        BEGIN
            INSERT INTO jsrt_concurrency_keys (script_id, tenant_id, path)
            VALUES (r.id, r.tenant_id, r.path::jsonpath);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'script %: concurrency_key ignored: %', r.id, SQLERRM;
        END;
    END LOOP;
END $$;
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TRIGGER IF EXISTS jsrt_runs_keyed_insert ON jsrt_runs;
DROP TRIGGER IF EXISTS jsrt_runs_keyed_delete ON jsrt_runs;
DROP FUNCTION IF EXISTS jsrt_runs_keyed();
DROP FUNCTION IF EXISTS jsrt_key_turn(UUID, TEXT, UUID, TIMESTAMPTZ, BOOLEAN);
DROP TRIGGER IF EXISTS jsrt_scripts_concurrency_key ON scripts;
DROP FUNCTION IF EXISTS jsrt_sync_concurrency_key();
DROP INDEX IF EXISTS idx_jsrt_dead_letter_state_order_key;
ALTER TABLE jsrt_dead_letter_state DROP COLUMN order_key;
DROP INDEX IF EXISTS idx_jsrt_runs_order_key;
ALTER TABLE jsrt_runs DROP COLUMN order_key;
DROP TABLE IF EXISTS jsrt_concurrency_keys;
-- +migrate StatementEnd
