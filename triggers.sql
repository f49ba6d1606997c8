-- jsruntime triggers and functions. Idempotent: `jsrt migrate up` re-applies this file
-- whenever its content changes (and after any migration), so edit it in place.
--
--   * sync triggers keep script_event_subscriptions, script_http_endpoints and
--     script_scheduled_jobs exactly in step with scripts;
--   * every new source is kept in script_versions (1, 2, 3, ...);
--   * updated_at is maintained on scripts and script_scheduled_jobs;
--   * jsrt_publish() queues an event durably inside the caller's transaction;
--   * a change to a script is announced on channel jsrt_scripts.

-- ---------------------------------------------------------------- updated_at
CREATE OR REPLACE FUNCTION jsrt_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := NOW();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_updated_at ON scripts;
CREATE TRIGGER jsrt_scripts_updated_at BEFORE UPDATE ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_touch_updated_at();

DROP TRIGGER IF EXISTS jsrt_scheduled_jobs_updated_at ON script_scheduled_jobs;
CREATE TRIGGER jsrt_scheduled_jobs_updated_at BEFORE UPDATE ON script_scheduled_jobs
    FOR EACH ROW EXECUTE FUNCTION jsrt_touch_updated_at();

-- ---------------------------------------------------------------- versions
CREATE OR REPLACE FUNCTION jsrt_scripts_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.source IS NOT DISTINCT FROM OLD.source THEN
        RETURN NULL;
    END IF;
    INSERT INTO script_versions (script_id, tenant_id, version_number, source, change_description, created_by)
    SELECT NEW.id, NEW.tenant_id, COALESCE(MAX(v.version_number), 0) + 1, NEW.source,
           NEW.metadata->>'change_description', NEW.created_by
    FROM script_versions v
    WHERE v.script_id = NEW.id AND v.tenant_id = NEW.tenant_id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_version ON scripts;
CREATE TRIGGER jsrt_scripts_version AFTER INSERT OR UPDATE OF source ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_scripts_version();

-- ---------------------------------------------------------------- event types required
-- The seed's CHECK scripts_event_types_required can never fire: array_length('{}', 1) and
-- array_length(NULL, 1) are NULL, and a CHECK that evaluates to NULL passes. The table stays
-- exactly as the seed gives it; this trigger enforces what the constraint means, under its name.
CREATE OR REPLACE FUNCTION jsrt_scripts_require_event_types() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'event' AND COALESCE(array_length(NEW.event_types, 1), 0) = 0 THEN
        RAISE EXCEPTION 'new row for relation "scripts" violates check constraint "scripts_event_types_required"'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'scripts_event_types_required',
                  TABLE = 'scripts', DETAIL = 'An event script needs at least one event type.';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_require_event_types ON scripts;
CREATE TRIGGER jsrt_scripts_require_event_types BEFORE INSERT OR UPDATE OF type, event_types
    ON scripts FOR EACH ROW EXECUTE FUNCTION jsrt_scripts_require_event_types();

-- ---------------------------------------------------------------- lookup tables
CREATE OR REPLACE FUNCTION jsrt_sync_event_subscriptions(s scripts) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF s.type <> 'event' THEN
        DELETE FROM script_event_subscriptions WHERE script_id = s.id AND tenant_id = s.tenant_id;
        RETURN;
    END IF;
    DELETE FROM script_event_subscriptions
    WHERE script_id = s.id AND tenant_id = s.tenant_id
      AND NOT (event_type = ANY (COALESCE(s.event_types, '{}')));
    INSERT INTO script_event_subscriptions (script_id, tenant_id, event_type, is_active)
    SELECT DISTINCT s.id, s.tenant_id, et, s.status = 'active'
    FROM unnest(s.event_types) AS et
    ON CONFLICT (script_id, event_type) DO UPDATE SET is_active = EXCLUDED.is_active
    WHERE script_event_subscriptions.is_active IS DISTINCT FROM EXCLUDED.is_active;
END
$$;

CREATE OR REPLACE FUNCTION jsrt_sync_http_endpoint(s scripts) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF s.type <> 'http' OR s.http_path IS NULL THEN
        DELETE FROM script_http_endpoints WHERE script_id = s.id AND tenant_id = s.tenant_id;
        RETURN;
    END IF;
    INSERT INTO script_http_endpoints (script_id, tenant_id, http_path, http_methods, is_active)
    VALUES (s.id, s.tenant_id, s.http_path,
            ARRAY(SELECT DISTINCT upper(m) FROM unnest(COALESCE(s.http_methods, '{}')) AS m ORDER BY 1),
            s.status = 'active')
    ON CONFLICT (script_id) DO UPDATE
        SET http_path = EXCLUDED.http_path,
            http_methods = EXCLUDED.http_methods,
            is_active = EXCLUDED.is_active;
END
$$;

-- next_run_at = '-infinity' means "not planned yet": the scheduler computes the next
-- tick from the cron expression (SQL cannot) without firing a run for it.
CREATE OR REPLACE FUNCTION jsrt_sync_scheduled_job(s scripts, old_status TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tz TEXT := COALESCE(NULLIF(s.metadata->>'timezone', ''), 'UTC');
BEGIN
    IF s.type <> 'scheduled' OR s.cron_expression IS NULL THEN
        DELETE FROM script_scheduled_jobs WHERE script_id = s.id AND tenant_id = s.tenant_id;
        RETURN;
    END IF;
    INSERT INTO script_scheduled_jobs (script_id, tenant_id, cron_expression, timezone, next_run_at)
    VALUES (s.id, s.tenant_id, s.cron_expression, tz, '-infinity')
    ON CONFLICT (script_id) DO UPDATE
        SET cron_expression = EXCLUDED.cron_expression,
            timezone = EXCLUDED.timezone,
            next_run_at = '-infinity'
    WHERE script_scheduled_jobs.cron_expression IS DISTINCT FROM EXCLUDED.cron_expression
       OR script_scheduled_jobs.timezone IS DISTINCT FROM EXCLUDED.timezone
       -- re-activation plans afresh: a paused script does not catch up on its pause
       OR (s.status = 'active' AND old_status IS DISTINCT FROM 'active');
END
$$;

CREATE OR REPLACE FUNCTION jsrt_scripts_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s scripts;
BEGIN
    IF TG_OP = 'DELETE' THEN
        s := OLD;  -- lookup rows go with the script through ON DELETE CASCADE
    ELSE
        s := NEW;
        PERFORM jsrt_sync_event_subscriptions(NEW);
        PERFORM jsrt_sync_http_endpoint(NEW);
        PERFORM jsrt_sync_scheduled_job(NEW, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END);
    END IF;
    PERFORM pg_notify('jsrt_scripts', json_build_object(
        'op', lower(TG_OP), 'tenant_id', s.tenant_id, 'script_id', s.id,
        'type', s.type, 'status', s.status)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jsrt_scripts_sync ON scripts;
CREATE TRIGGER jsrt_scripts_sync AFTER INSERT OR UPDATE OR DELETE ON scripts
    FOR EACH ROW EXECUTE FUNCTION jsrt_scripts_sync();

-- ---------------------------------------------------------------- events
-- Queue an event. The row is the truth; the notification only wakes daemons up, and
-- carries no event id so that a bulk publish collapses into one wake-up per tenant.
CREATE OR REPLACE FUNCTION jsrt_enqueue(
    p_tenant_id UUID, p_event_type TEXT, p_payload JSONB,
    p_dedup_key TEXT DEFAULT NULL, p_depth INTEGER DEFAULT 0, p_source TEXT DEFAULT 'publish'
) RETURNS UUID
LANGUAGE plpgsql AS $$
DECLARE
    v_id UUID;
BEGIN
    IF p_tenant_id IS NULL THEN
        RAISE EXCEPTION 'jsrt_publish: tenant_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF p_event_type IS NULL OR length(btrim(p_event_type)) = 0 THEN
        RAISE EXCEPTION 'jsrt_publish: event_type must be a non-empty string' USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenants WHERE id = p_tenant_id) THEN
        RAISE EXCEPTION 'jsrt_publish: unknown tenant %', p_tenant_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO jsrt_events (tenant_id, event_type, payload, dedup_key, depth, source)
    VALUES (p_tenant_id, p_event_type, COALESCE(p_payload, '{}'::jsonb), p_dedup_key, p_depth, p_source)
    ON CONFLICT (tenant_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN  -- a duplicate of an event we already hold
        SELECT id INTO v_id FROM jsrt_events WHERE tenant_id = p_tenant_id AND dedup_key = p_dedup_key;
        RETURN v_id;
    END IF;
    PERFORM pg_notify('jsrt_events', json_build_object('queued', true, 'tenant_id', p_tenant_id)::text);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION jsrt_publish(
    p_tenant_id UUID, p_event_type TEXT, p_payload JSONB DEFAULT '{}'::jsonb
) RETURNS UUID
LANGUAGE sql AS $$
    SELECT jsrt_enqueue(p_tenant_id, p_event_type, p_payload, NULL, 0, 'publish');
$$;

COMMENT ON FUNCTION jsrt_publish(UUID, TEXT, JSONB) IS
    'Publish a domain event for a tenant; it runs only if the calling transaction commits';

-- ---------------------------------------------------------------- runs
-- Start up to p_limit pending runs for daemon p_daemon. Scripts with pending runs are
-- visited in id order from p_after, wrapping round (the daemon passes a random start, so
-- no script is favoured), taking at most p_per_script of each: one script's backlog never
-- starves another's single run. A script's max_concurrent_runs holds across every daemon:
-- the per-script advisory lock serialises count-then-start between concurrent starters
-- (anyone else counting this script's runs, e.g. jsrt_start_now, must take it too).
CREATE OR REPLACE FUNCTION jsrt_start_runs(
    p_daemon TEXT, p_limit INTEGER, p_per_script INTEGER, p_after UUID DEFAULT NULL
) RETURNS TABLE (
    execution_id UUID, tenant_id UUID, script_id UUID, source TEXT, version_id TEXT,
    resource_limits JSONB, input JSONB, trigger_type TEXT, trigger_data JSONB,
    event_id UUID, dead_letter_id UUID, depth INTEGER
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_script UUID;
    v_cursor UUID := p_after;
    v_second_pass BOOLEAN := false;
    v_free INTEGER;
    v_ids UUID[];
    v_all UUID[] := '{}';
BEGIN
    LOOP
        EXIT WHEN cardinality(v_all) >= p_limit;
        SELECT r.script_id INTO v_script FROM jsrt_runs r
        WHERE r.state = 'pending'
          AND (v_cursor IS NULL OR r.script_id > v_cursor)
          AND (NOT v_second_pass OR r.script_id <= p_after)
        ORDER BY r.script_id LIMIT 1;
        IF v_script IS NULL THEN
            EXIT WHEN v_second_pass OR p_after IS NULL;
            v_second_pass := true;
            v_cursor := NULL;
            CONTINUE;
        END IF;
        v_cursor := v_script;

        -- Try, never wait: two starters visiting scripts in different orders would
        -- otherwise deadlock. A script locked now is being started by another daemon.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended('jsrt_run:' || v_script::text, 0));
        SELECT COALESCE((s.resource_limits->>'max_concurrent_runs')::int, 5)
               - (SELECT count(*) FROM jsrt_runs r WHERE r.script_id = v_script AND r.state = 'running')
        INTO v_free FROM scripts s WHERE s.id = v_script;
        v_free := LEAST(COALESCE(v_free, 0), p_per_script, p_limit - cardinality(v_all));
        CONTINUE WHEN v_free <= 0;

        WITH picked AS (
            SELECT r.execution_id FROM jsrt_runs r
            WHERE r.script_id = v_script AND r.state = 'pending'
            ORDER BY r.created_at LIMIT v_free
            FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE jsrt_runs r SET state = 'running', daemon_id = p_daemon, started_at = clock_timestamp()
            FROM picked WHERE r.execution_id = picked.execution_id
            RETURNING r.execution_id
        )
        SELECT array_agg(upd.execution_id) INTO v_ids FROM upd;
        v_all := v_all || COALESCE(v_ids, '{}');
    END LOOP;

    RETURN QUERY
    WITH started AS (
        UPDATE script_executions e SET status = 'running', started_at = r.started_at
        FROM jsrt_runs r
        WHERE r.execution_id = ANY (v_all) AND r.execution_id = e.id AND r.tenant_id = e.tenant_id
        RETURNING e.id, e.tenant_id, e.script_id, e.input, e.trigger_type, e.trigger_data,
                  r.event_id, r.dead_letter_id
    )
    SELECT st.id, st.tenant_id, st.script_id, s.source, md5(s.source), s.resource_limits,
           st.input, st.trigger_type::text, st.trigger_data, st.event_id, st.dead_letter_id,
           COALESCE((st.trigger_data->>'depth')::int, 0)
    FROM started st JOIN scripts s ON s.id = st.script_id AND s.tenant_id = st.tenant_id;
END
$$;

-- ---------------------------------------------------------------- runs started now
-- An execution started outside the queue (HTTP request, `jsrt exec`, embedded API): under
-- the same per-script advisory lock as jsrt_start_runs, count the script's running runs and,
-- when a slot is free, create the execution ('running') and its run, owned by p_daemon (the
-- caller's lease in jsrt_daemons, so the rescuer knows it is alive). Returns the run in
-- jsrt_start_runs' shape, or no row when the script is full. A script that does not exist
-- in p_tenant_id, or is disabled or archived, raises no_data_found.
CREATE OR REPLACE FUNCTION jsrt_start_now(
    p_daemon TEXT, p_tenant_id UUID, p_script_id UUID, p_trigger_type TEXT,
    p_trigger_data JSONB, p_input JSONB
) RETURNS TABLE (
    execution_id UUID, tenant_id UUID, script_id UUID, source TEXT, version_id TEXT,
    resource_limits JSONB, input JSONB, trigger_type TEXT, trigger_data JSONB,
    event_id UUID, dead_letter_id UUID, depth INTEGER
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_script scripts;
    v_id UUID;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('jsrt_run:' || p_script_id::text, 0));
    SELECT s.* INTO v_script FROM scripts s
    WHERE s.id = p_script_id AND s.tenant_id = p_tenant_id
      AND s.status NOT IN ('disabled', 'archived');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jsrt_start_now: no runnable script % in tenant %', p_script_id, p_tenant_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF (SELECT count(*) FROM jsrt_runs r WHERE r.script_id = p_script_id AND r.state = 'running')
       >= COALESCE((v_script.resource_limits->>'max_concurrent_runs')::int, 5) THEN
        RETURN;
    END IF;
    INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, trigger_data, input)
    VALUES (p_script_id, p_tenant_id, 'running', p_trigger_type, COALESCE(p_trigger_data, '{}'),
            COALESCE(p_input, '{}'::jsonb))
    RETURNING id INTO v_id;
    INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id, started_at)
    VALUES (v_id, p_tenant_id, p_script_id, 'running', p_daemon, NOW());
    RETURN QUERY SELECT v_id, p_tenant_id, p_script_id, v_script.source, md5(v_script.source),
                        v_script.resource_limits, COALESCE(p_input, '{}'::jsonb),
                        p_trigger_type, COALESCE(p_trigger_data, '{}'), NULL::uuid, NULL::uuid, 0;
END
$$;
