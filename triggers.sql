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
    -- The nesting limit of every JSON value the runtime takes in (consumer/jsontext.py): a
    -- container at level 64 (the payload itself is level 0) is the 65th level.
    IF jsonb_path_exists(p_payload, 'strict $.**{64 to last} ? (@.type() == "object" || @.type() == "array")') THEN
        RAISE EXCEPTION 'jsrt_publish: payload is nested deeper than 64 levels'
            USING ERRCODE = 'program_limit_exceeded';
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

-- ---------------------------------------------------------------- run slots
-- The per-script advisory lock under which a script's running runs are counted and started:
-- every starter (jsrt_start_runs, jsrt_claim, jsrt_start_now) takes it.
CREATE OR REPLACE FUNCTION jsrt_run_lock(p_script UUID) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('jsrt_run:' || p_script::text, 0);
$$;

-- A script's max_concurrent_runs as its resource_limits hold it, never an error: the seed has
-- no CHECK on the column, and a value SQL wrote there ("abc", 2.5, 1e10, an array) must cost
-- that script its runs, not fail every claim of every tenant. Missing: the seed's default, 5.
-- Not a whole number in 1..1000: 1 slot - the run then fails in the daemon, which reads the
-- same limits and says what is wrong with them in the execution's error.
CREATE OR REPLACE FUNCTION jsrt_max_concurrent_runs(p_limits JSONB) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_limits) IS DISTINCT FROM 'object'
            THEN CASE WHEN p_limits IS NULL THEN 5 ELSE 1 END
        WHEN NOT p_limits ? 'max_concurrent_runs' THEN 5
        WHEN jsonb_typeof(p_limits->'max_concurrent_runs') <> 'number' THEN 1
        ELSE (SELECT CASE WHEN n BETWEEN 1 AND 1000 AND n = trunc(n) THEN n::int ELSE 1 END
              FROM (SELECT (p_limits->>'max_concurrent_runs')::numeric AS n) v)
    END;
$$;

-- A script's free slots: its max_concurrent_runs minus its running runs and minus the
-- slots daemons hold leases on (jsrt_leases: runs reserved under a lease are not 'running'
-- rows, the lease's slots stand for them); NULL for no such script. Call it in a statement
-- after taking jsrt_run_lock, so that its snapshot includes every earlier starter's commit.
CREATE OR REPLACE FUNCTION jsrt_free_slots(p_script UUID) RETURNS INTEGER
LANGUAGE sql STABLE AS $$
    SELECT jsrt_max_concurrent_runs(s.resource_limits)
           - (SELECT count(*) FROM jsrt_runs r
              WHERE r.script_id = p_script AND r.state = 'running')::int
           - (SELECT COALESCE(sum(l.slots), 0) FROM jsrt_leases l
              WHERE l.script_id = p_script)::int
    FROM scripts s WHERE s.id = p_script;
$$;

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
    v_after UUID := COALESCE(p_after, '00000000-0000-0000-0000-000000000000');
    v_cursor UUID := v_after;
    v_second_pass BOOLEAN := false;
    v_free INTEGER;
    v_ids UUID[];
    v_all UUID[] := '{}';
BEGIN
    LOOP
        EXIT WHEN cardinality(v_all) >= p_limit;
        -- three plain probes rather than one with "x IS NULL OR" conditions, which would
        -- be planned afresh on every call
        IF NOT v_second_pass THEN  -- scripts after p_after ...
            SELECT r.script_id INTO v_script FROM jsrt_runs r
            WHERE r.state = 'pending' AND r.script_id > v_cursor
            ORDER BY r.script_id LIMIT 1;
        ELSIF v_cursor IS NULL THEN  -- ... then from the lowest ...
            SELECT r.script_id INTO v_script FROM jsrt_runs r
            WHERE r.state = 'pending' AND r.script_id <= v_after
            ORDER BY r.script_id LIMIT 1;
        ELSE  -- ... up to p_after
            SELECT r.script_id INTO v_script FROM jsrt_runs r
            WHERE r.state = 'pending' AND r.script_id > v_cursor AND r.script_id <= v_after
            ORDER BY r.script_id LIMIT 1;
        END IF;
        IF v_script IS NULL THEN
            EXIT WHEN v_second_pass;
            v_second_pass := true;
            v_cursor := NULL;
            CONTINUE;
        END IF;
        v_cursor := v_script;

        -- Try, never wait: two starters visiting scripts in different orders would
        -- otherwise deadlock. A script locked now is being started by another daemon.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(jsrt_run_lock(v_script));
        v_free := jsrt_free_slots(v_script);
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

-- ---------------------------------------------------------------- claim
-- The claim loop's one round trip, for daemon p_daemon with p_run_limit free slots:
-- 1. when p_start_pending, start queued runs first (jsrt_start_runs, from p_script_after);
-- 2. fan due events out into executions, no more events than the slots left (the queue
--    then stays in jsrt_events, where any daemon can take it); without a daemon (p_run_limit
--    0) up to p_event_limit. Tenants are visited in id order from p_tenant_after round to just
--    below it (a random start: no tenant is favoured by its id), at most p_per_tenant events
--    each, so one tenant's backlog cannot delay another tenant's events;
-- 3. a new execution whose script has no queued run and a free slot (under the same
--    per-script lock as jsrt_start_runs) is created 'running' for p_daemon at once: no
--    'pending' row version is written only to be updated. The others are queued 'pending'.
-- Returns the started runs, then one summary row (execution_id NULL): events dispatched,
-- executions created, of which queued, events by source, whether more events may be due
-- (dispatch was cut short by the slots, the limit or a tenant's share), and whether any
-- run is left waiting.
CREATE OR REPLACE FUNCTION jsrt_claim(
    p_daemon TEXT, p_event_limit INTEGER, p_per_tenant INTEGER, p_tenant_after UUID,
    p_run_limit INTEGER, p_per_script INTEGER, p_script_after UUID, p_start_pending BOOLEAN
) RETURNS TABLE (
    execution_id UUID, tenant_id UUID, script_id UUID, source TEXT, version_id TEXT,
    resource_limits JSONB, input JSONB, trigger_type TEXT, trigger_data JSONB,
    event_id UUID, dead_letter_id UUID, depth INTEGER,
    events INTEGER, created INTEGER, queued INTEGER, by_source JSONB, more BOOLEAN,
    waiting BOOLEAN
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- No "p IS NULL OR" conditions below: they would keep the plan cache from reusing a
    -- generic plan, and planning the fan-out costs more than running it for a few events.
    v_tenant_after UUID := COALESCE(p_tenant_after, '00000000-0000-0000-0000-000000000000');
    v_event_limit INTEGER := p_event_limit;
    v_events INTEGER := 0;
    v_tenant_full BOOLEAN := false;
    v_by_source JSONB := '{}';
    v_exec UUID[]; v_event UUID[]; v_script UUID[]; v_tenant UUID[]; v_type TEXT[];
    v_payload JSONB[]; v_depth INTEGER[]; v_published TIMESTAMPTZ[];
    v_run_scripts UUID[] := '{}';
    v_run_slots INTEGER[] := '{}';
    v_left INTEGER := GREATEST(COALESCE(p_run_limit, 0), 0);
    v_started INTEGER := 0;
    v_free INTEGER;
    v_n INTEGER;
    v_now TIMESTAMPTZ;
    r RECORD;
BEGIN
    -- A claim need not wait for its WAL flush: should the database crash before the flush,
    -- the claim is forgotten and its events are claimed again (at least once, as for any
    -- crash), and the runs it started are only discarded when their results find no run.
    -- What must survive a crash (events, results, dead letters) still commits durably.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- (the probe first: calling jsrt_start_runs costs more than finding nothing to start)
    IF p_start_pending AND v_left > 0
       AND EXISTS (SELECT 1 FROM jsrt_runs x WHERE x.state = 'pending') THEN
        RETURN QUERY
        SELECT st.*, NULL::int, NULL::int, NULL::int, NULL::jsonb, NULL::boolean, NULL::boolean
        FROM jsrt_start_runs(p_daemon, v_left, p_per_script, p_script_after) st;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
    END IF;
    IF p_run_limit > 0 THEN
        v_event_limit := LEAST(p_event_limit, v_left);
    END IF;

    -- (the probe first: starting the fan-out's plan costs more than finding nothing)
    IF v_event_limit > 0 AND EXISTS (SELECT 1 FROM jsrt_events e WHERE e.dispatched_at IS NULL) THEN
        WITH RECURSIVE tenants_up AS (
            -- a loose index scan over the tenants with due events: from p_tenant_after up ...
            (SELECT e.tenant_id FROM jsrt_events e
             WHERE e.dispatched_at IS NULL AND e.tenant_id > v_tenant_after
             ORDER BY e.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT e.tenant_id FROM jsrt_events e
                    WHERE e.dispatched_at IS NULL AND e.tenant_id > t.tenant_id
                    ORDER BY e.tenant_id LIMIT 1)
            FROM tenants_up t WHERE t.tenant_id IS NOT NULL
        ),
        tenants_wrapped AS (
            -- ... then round from the lowest (scanned only when the first part runs out)
            (SELECT e.tenant_id FROM jsrt_events e
             WHERE e.dispatched_at IS NULL AND e.tenant_id <= v_tenant_after
             ORDER BY e.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT e.tenant_id FROM jsrt_events e
                    WHERE e.dispatched_at IS NULL AND e.tenant_id > t.tenant_id
                      AND e.tenant_id <= v_tenant_after
                    ORDER BY e.tenant_id LIMIT 1)
            FROM tenants_wrapped t WHERE t.tenant_id IS NOT NULL
        ),
        tenants_due AS (
            SELECT tenant_id FROM tenants_up WHERE tenant_id IS NOT NULL
            UNION ALL
            SELECT tenant_id FROM tenants_wrapped WHERE tenant_id IS NOT NULL
        ),
        claimed AS (
            SELECT ev.* FROM (SELECT tenant_id FROM tenants_due LIMIT v_event_limit) t
            CROSS JOIN LATERAL (
                SELECT e.id, e.tenant_id, e.event_type, e.payload, e.depth, e.published_at
                FROM jsrt_events e
                WHERE e.tenant_id = t.tenant_id AND e.dispatched_at IS NULL
                ORDER BY e.published_at
                LIMIT p_per_tenant
                FOR UPDATE SKIP LOCKED
            ) ev
            LIMIT v_event_limit
        ),
        marked AS (
            -- = ANY(ARRAY(...)): the planner's estimate for a join here picks a seq scan
            UPDATE jsrt_events e SET dispatched_at = NOW()
            WHERE e.id = ANY (ARRAY(SELECT id FROM claimed))
            RETURNING e.id, e.source
        ),
        targets AS (
            SELECT c.id AS event_id, c.tenant_id, c.event_type, c.payload, c.depth,
                   c.published_at, sub.script_id, gen_random_uuid() AS execution_id
            FROM claimed c
            JOIN script_event_subscriptions sub
              ON sub.tenant_id = c.tenant_id AND sub.event_type = c.event_type AND sub.is_active
            JOIN scripts s
              ON s.id = sub.script_id AND s.tenant_id = c.tenant_id AND s.status = 'active'
        ),
        delivered AS (
            -- the primary key (event, script) is the rule behind exactly-once
            INSERT INTO jsrt_deliveries (event_id, script_id, tenant_id, execution_id)
            SELECT t.event_id, t.script_id, t.tenant_id, t.execution_id FROM targets t
            ON CONFLICT (event_id, script_id) DO NOTHING
            RETURNING execution_id
        )
        SELECT (SELECT count(*) FROM marked),
               (SELECT COALESCE(jsonb_object_agg(m.source, m.n), '{}'::jsonb)
                FROM (SELECT source, count(*) AS n FROM marked GROUP BY source) m),
               -- a tenant that filled its share may have more
               (SELECT COALESCE(max(c.n), 0) >= p_per_tenant
                FROM (SELECT count(*) AS n FROM claimed GROUP BY tenant_id) c),
               array_agg(t.execution_id ORDER BY t.published_at, t.event_id),
               array_agg(t.event_id ORDER BY t.published_at, t.event_id),
               array_agg(t.script_id ORDER BY t.published_at, t.event_id),
               array_agg(t.tenant_id ORDER BY t.published_at, t.event_id),
               array_agg(t.event_type ORDER BY t.published_at, t.event_id),
               array_agg(t.payload ORDER BY t.published_at, t.event_id),
               array_agg(t.depth ORDER BY t.published_at, t.event_id),
               array_agg(t.published_at ORDER BY t.published_at, t.event_id)
        INTO v_events, v_by_source, v_tenant_full, v_exec, v_event, v_script, v_tenant, v_type, v_payload,
             v_depth, v_published
        FROM targets t JOIN delivered d ON d.execution_id = t.execution_id;
    END IF;

    IF v_exec IS NOT NULL THEN
        -- Free slots of each script with new executions, first come first served. Lock
        -- first, then count: the count's snapshot then includes every earlier starter.
        FOR r IN SELECT u.s, count(*)::int AS n FROM unnest(v_script) WITH ORDINALITY u(s, i)
                 GROUP BY u.s ORDER BY min(u.i) LOOP
            EXIT WHEN v_left <= 0;
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(jsrt_run_lock(r.s));
            -- queued runs of the script go first: the new ones queue behind them
            v_free := CASE WHEN EXISTS (SELECT 1 FROM jsrt_runs x
                                        WHERE x.script_id = r.s AND x.state = 'pending')
                           THEN 0 ELSE jsrt_free_slots(r.s) END;
            v_n := LEAST(COALESCE(v_free, 0), p_per_script, v_left, r.n);
            CONTINUE WHEN v_n <= 0;
            v_run_scripts := v_run_scripts || r.s;
            v_run_slots := v_run_slots || v_n;
            v_left := v_left - v_n;
        END LOOP;

        v_now := clock_timestamp();
        RETURN QUERY
        WITH t AS (
            SELECT u.*, (row_number() OVER (PARTITION BY u.script_id ORDER BY u.i)
                         <= COALESCE(f.slots, 0)) AS run_now
            FROM unnest(v_exec, v_event, v_script, v_tenant, v_type, v_payload, v_depth, v_published)
                 WITH ORDINALITY AS u(execution_id, event_id, script_id, tenant_id, event_type,
                                      payload, depth, published_at, i)
            LEFT JOIN unnest(v_run_scripts, v_run_slots) AS f(script_id, slots)
                   ON f.script_id = u.script_id
        ),
        execs AS (
            INSERT INTO script_executions
                (id, script_id, tenant_id, status, trigger_type, trigger_data, input, started_at)
            SELECT t.execution_id, t.script_id, t.tenant_id,
                   CASE WHEN t.run_now THEN 'running' ELSE 'pending' END, 'event',
                   jsonb_build_object('type', 'event', 'event_id', t.event_id,
                                      'event_type', t.event_type, 'published_at', t.published_at,
                                      'attempt', 1, 'depth', t.depth),
                   -- started_at is NOT NULL in the seed: a queued one is re-set when it starts
                   t.payload, CASE WHEN t.run_now THEN v_now ELSE NOW() END
            FROM t
            RETURNING id, tenant_id, script_id, status, trigger_data, input
        ),
        runs AS (
            INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, event_id, state, daemon_id, started_at)
            SELECT t.execution_id, t.tenant_id, t.script_id, t.event_id,
                   CASE WHEN t.run_now THEN 'running' ELSE 'pending' END,
                   CASE WHEN t.run_now THEN p_daemon END, CASE WHEN t.run_now THEN v_now END
            FROM t
        )
        SELECT x.id, x.tenant_id, x.script_id, s.source, md5(s.source), s.resource_limits,
               x.input, 'event'::text, x.trigger_data, (x.trigger_data->>'event_id')::uuid,
               NULL::uuid, (x.trigger_data->>'depth')::int,
               NULL::int, NULL::int, NULL::int, NULL::jsonb, NULL::boolean, NULL::boolean
        FROM execs x JOIN scripts s ON s.id = x.script_id AND s.tenant_id = x.tenant_id
        WHERE x.status = 'running';
        GET DIAGNOSTICS v_started = ROW_COUNT;
    END IF;

    RETURN QUERY SELECT NULL::uuid, NULL::uuid, NULL::uuid, NULL::text, NULL::text, NULL::jsonb,
                        NULL::jsonb, NULL::text, NULL::jsonb, NULL::uuid, NULL::uuid, NULL::int,
                        v_events, COALESCE(cardinality(v_exec), 0),
                        COALESCE(cardinality(v_exec), 0) - v_started, v_by_source,
                        v_event_limit < p_event_limit OR v_tenant_full
                            OR (v_event_limit > 0 AND v_events >= v_event_limit),
                        EXISTS (SELECT 1 FROM jsrt_runs x WHERE x.state = 'pending');
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
    PERFORM pg_advisory_xact_lock(jsrt_run_lock(p_script_id));
    SELECT s.* INTO v_script FROM scripts s
    WHERE s.id = p_script_id AND s.tenant_id = p_tenant_id
      AND s.status NOT IN ('disabled', 'archived');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jsrt_start_now: no runnable script % in tenant %', p_script_id, p_tenant_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF jsrt_free_slots(p_script_id) <= 0 THEN
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
