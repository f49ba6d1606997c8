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
    ON CONFLICT (tenant_id, dedup_key) DO NOTHING
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
