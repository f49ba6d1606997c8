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

-- Cancel executions: each unfinished one (a run in jsrt_runs) ends 'cancelled' now, with who
-- cancelled it in its error, and its run goes: a pending run never starts, and a daemon's late
-- result for a reserved or running one finds no run of its own to record (complete_runs).
-- The process that had taken it is told (jsrt_cancels, and a hint on jsrt_cancel naming it)
-- and stops it. A cancelled run is never dead-lettered: a retry attempt's letter stops being
-- in flight and waits for an operator (next_retry_at NULL: `jsrt dead-letters retry`);
-- a cron run frees its job for the next tick. One row per id given: 'cancelled', or
-- 'finished' (with its status) or 'missing' (no such execution in that tenant; p_tenant NULL:
-- any tenant).
CREATE OR REPLACE FUNCTION jsrt_cancel(p_ids UUID[], p_by TEXT, p_tenant UUID DEFAULT NULL)
RETURNS TABLE (execution_id UUID, tenant_id UUID, script_id UUID, outcome TEXT,
               status TEXT, was TEXT, daemon_id TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids UUID[]; v_states TEXT[]; v_daemons TEXT[]; v_owners TEXT[];
BEGIN
    WITH before AS (  -- (every part of the statement sees the rows as they were)
        SELECT e.id, e.status FROM script_executions e WHERE e.id = ANY (p_ids)
    ),
    gone AS (
        DELETE FROM jsrt_runs r
        WHERE r.execution_id = ANY (p_ids) AND (p_tenant IS NULL OR r.tenant_id = p_tenant)
        RETURNING r.execution_id, r.tenant_id, r.script_id, r.state, r.daemon_id,
                  r.dead_letter_id
    ),
    ended AS (
        UPDATE script_executions e
        SET status = 'cancelled', error = 'cancelled by ' || p_by, completed_at = NOW()
        FROM gone g WHERE e.id = g.execution_id AND (e.tenant_id = g.tenant_id) IS TRUE
        RETURNING e.id, e.trigger_type
    ),
    told AS (
        INSERT INTO jsrt_cancels (execution_id, daemon_id, tenant_id, cancelled_by)
        SELECT g.execution_id, g.daemon_id, g.tenant_id, p_by FROM gone g
        WHERE g.state <> 'pending'
          AND EXISTS (SELECT 1 FROM jsrt_daemons d WHERE d.id = g.daemon_id)
        ON CONFLICT ON CONSTRAINT jsrt_cancels_pkey DO NOTHING
    ),
    letters AS (
        UPDATE jsrt_dead_letter_state st SET in_flight = false, next_retry_at = NULL
        FROM gone g
        WHERE st.dead_letter_id = g.dead_letter_id AND st.tenant_id = g.tenant_id
    ),
    cron AS (
        UPDATE script_scheduled_jobs j
        SET is_running = false, last_run_at = NOW(), last_run_status = 'cancelled'
        FROM gone g JOIN ended x ON x.id = g.execution_id AND x.trigger_type = 'cron'
        WHERE j.script_id = g.script_id AND j.tenant_id = g.tenant_id
    )
    -- was: the execution's status when cancelled (pending, also when reserved in a daemon's
    -- local queue; running)
    SELECT COALESCE(array_agg(g.execution_id), '{}'),
           COALESCE(array_agg(COALESCE(b.status::text, g.state::text)), '{}'),
           COALESCE(array_agg(g.daemon_id), '{}'),
           array_agg(DISTINCT g.daemon_id) FILTER (WHERE g.state <> 'pending')
    INTO v_ids, v_states, v_daemons, v_owners
    FROM gone g LEFT JOIN before b ON b.id = g.execution_id;

    IF v_owners IS NOT NULL THEN
        PERFORM pg_notify('jsrt_cancel', o) FROM unnest(v_owners) o;
    END IF;

    RETURN QUERY
    SELECT i.id, e.tenant_id, e.script_id,
           CASE WHEN c.id IS NOT NULL THEN 'cancelled'
                WHEN e.id IS NOT NULL THEN 'finished' ELSE 'missing' END,
           e.status::text, c.state, c.daemon_id
    FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
    LEFT JOIN unnest(v_ids, v_states, v_daemons) AS c(id, state, daemon_id) ON c.id = i.id
    LEFT JOIN script_executions e
      ON e.id = i.id AND (p_tenant IS NULL OR e.tenant_id = p_tenant)
    ORDER BY i.n;
END
$$;

-- ---------------------------------------------------------------- per-key ordering
-- scripts.metadata.concurrency_key (a JSON path) → jsrt_concurrency_keys; the cast refuses a
-- path PostgreSQL cannot parse, with its message.
CREATE OR REPLACE FUNCTION jsrt_sync_concurrency_key() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_path JSONB := NEW.metadata->'concurrency_key';
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.metadata->'concurrency_key' IS NOT DISTINCT FROM v_path THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v_path) = 'string' AND btrim(v_path #>> '{}') <> '' THEN
        INSERT INTO jsrt_concurrency_keys (script_id, tenant_id, path)
        VALUES (NEW.id, NEW.tenant_id, (v_path #>> '{}')::jsonpath)
        ON CONFLICT (script_id) DO UPDATE SET path = EXCLUDED.path;
    ELSE
        DELETE FROM jsrt_concurrency_keys WHERE script_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_concurrency_key ON scripts;
CREATE TRIGGER jsrt_scripts_concurrency_key AFTER INSERT OR UPDATE OF metadata ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_sync_concurrency_key();

-- Is it this keyed pending run's turn? Its key has no run reserved or running, none ahead of
-- it in the queue (a retry first, then publish order: created_at), and - unless it is a
-- retry itself - no dead letter waiting for its next retry (a failed run holds its key until
-- it succeeds or is exhausted; a letter parked by a cancel, next_retry_at NULL, does not),
-- and no event of the key published no later than it still waiting to be fanned out. That
-- last one closes a race between claims: events are claimed FOR UPDATE SKIP LOCKED, so while
-- one claim has an event locked and its fan-out not yet committed, another claim takes the
-- key's next event, and its next claim, whose snapshot has no run of the earlier event
-- (nor a dead letter of it, nor its execution), would reserve the later one. In any one
-- snapshot an earlier event of the key is one of: undispatched, a run in jsrt_runs, a dead
-- letter, done - each of which is looked at here. (<=: events of one transaction share a
-- published_at; once fanned out, their runs' order decides.)
CREATE OR REPLACE FUNCTION jsrt_key_turn(p_script UUID, p_key TEXT, p_id UUID,
                                         p_created TIMESTAMPTZ, p_retry BOOLEAN)
RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
               SELECT 1 FROM jsrt_runs o
               WHERE o.script_id = p_script AND o.order_key = p_key AND o.execution_id <> p_id
                 AND (o.state <> 'pending'
                      OR (o.dead_letter_id IS NOT NULL AND NOT p_retry)
                      OR ((o.dead_letter_id IS NOT NULL) = p_retry
                          AND (o.created_at, o.execution_id) < (p_created, p_id))))
       AND (p_retry OR NOT EXISTS (
               SELECT 1 FROM jsrt_dead_letter_state st
               JOIN script_event_dead_letters d
                 ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id
               WHERE st.order_key = p_key AND st.resolved_at IS NULL AND d.script_id = p_script
                 AND NOT st.in_flight AND st.next_retry_at IS NOT NULL
                 AND d.retry_count < st.max_retries))
       AND (p_retry OR NOT EXISTS (
               SELECT 1 FROM scripts s
               JOIN jsrt_concurrency_keys k ON k.script_id = s.id
               -- the due events through jsrt_events_due (its index holds only them)
               JOIN jsrt_events_due q ON q.tenant_id = s.tenant_id
               JOIN jsrt_events e
                 ON e.id = q.event_id
                AND (e.tenant_id = s.tenant_id AND e.dispatched_at IS NULL
                     AND e.published_at <= p_created) IS TRUE
               JOIN script_event_subscriptions sub
                 ON sub.script_id = s.id AND sub.tenant_id = s.tenant_id
                AND sub.event_type = e.event_type AND sub.is_active
               WHERE s.id = p_script
                 AND jsonb_path_query_first(e.payload, k.path, '{}', true) #>> '{}' = p_key))
$$;

-- A keyed run queued or gone: the key's next run may be startable now. A hint to the daemons
-- (jsrt_publish's wake-up; identical notifications of a transaction are sent once).
CREATE OR REPLACE FUNCTION jsrt_runs_keyed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jsrt_events', '{"queued": true}');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jsrt_runs_keyed_insert ON jsrt_runs;
CREATE TRIGGER jsrt_runs_keyed_insert AFTER INSERT ON jsrt_runs
    FOR EACH ROW WHEN (NEW.order_key IS NOT NULL AND NEW.state = 'pending')
    EXECUTE FUNCTION jsrt_runs_keyed();
DROP TRIGGER IF EXISTS jsrt_runs_keyed_delete ON jsrt_runs;
CREATE TRIGGER jsrt_runs_keyed_delete AFTER DELETE ON jsrt_runs
    FOR EACH ROW WHEN (OLD.order_key IS NOT NULL)
    EXECUTE FUNCTION jsrt_runs_keyed();
