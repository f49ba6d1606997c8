-- Dead letters for operators: a per-letter retry budget (so `jsrt dead-letters retry` can grant
-- an exhausted letter one more attempt without rewriting its history), and the review views
-- shipped with the product. Every view has tenant_id as a column: filter on it.
--
--   jsrt_dl_failures_24h         failed/timed-out event executions of the last 24 h, by script and error
--   jsrt_dl_exhausted_by_tenant  exhausted letters (all retries used, unresolved) per tenant
--   jsrt_dl_oldest_unresolved    every unresolved letter with its age and state (ORDER BY created_at)
--   jsrt_dl_retry_success_rate   per script: retries attempted / succeeded, letters recovered

-- +migrate Up
-- +migrate StatementBegin
ALTER TABLE jsrt_dead_letter_state
    ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 3 CHECK (max_retries >= 0);

COMMENT ON COLUMN jsrt_dead_letter_state.max_retries IS
    'Retries this letter may use: 3 automatically; a manual retry of an exhausted letter raises it to retry_count + 1';

CREATE VIEW jsrt_dl_failures_24h AS
SELECT e.tenant_id, e.script_id, s.name AS script_name, e.status,
       left(split_part(coalesce(e.error, e.status), E'\n', 1), 300) AS error,
       count(*) AS failures,
       count(*) FILTER (WHERE e.trigger_data ? 'dead_letter_id') AS failed_retries,
       min(e.started_at) AS first_at,
       max(e.started_at) AS last_at
FROM script_executions e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE e.trigger_type = 'event' AND e.status IN ('failed', 'timeout')
  AND e.started_at >= NOW() - INTERVAL '24 hours'
GROUP BY e.tenant_id, e.script_id, s.name, e.status,
         left(split_part(coalesce(e.error, e.status), E'\n', 1), 300);

COMMENT ON VIEW jsrt_dl_failures_24h IS 'Failed and timed-out event executions of the last 24 hours, by tenant, script and error (first line)';

CREATE VIEW jsrt_dl_exhausted_by_tenant AS
SELECT d.tenant_id, t.name AS tenant_name,
       count(*) AS exhausted,
       count(DISTINCT d.script_id) AS scripts,
       min(d.created_at) AS oldest_created_at,
       max(d.last_retry_at) AS last_retry_at
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
JOIN tenants t ON t.id = d.tenant_id
WHERE st.resolved_at IS NULL AND NOT st.in_flight AND d.retry_count >= st.max_retries
GROUP BY d.tenant_id, t.name;

COMMENT ON VIEW jsrt_dl_exhausted_by_tenant IS 'Unresolved dead letters whose retries are all used, per tenant';

CREATE VIEW jsrt_dl_oldest_unresolved AS
SELECT d.tenant_id, d.id AS dead_letter_id, d.script_id, s.name AS script_name, s.status AS script_status,
       d.event_type, d.retry_count, st.max_retries,
       CASE WHEN st.in_flight THEN 'in_flight'
            WHEN d.retry_count >= st.max_retries THEN 'exhausted'
            WHEN s.status <> 'active' THEN 'waiting_for_script'
            ELSE 'scheduled' END AS state,
       st.next_retry_at, d.last_retry_at, d.created_at,
       NOW() - d.created_at AS age,
       left(split_part(d.error, E'\n', 1), 300) AS error
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
WHERE st.resolved_at IS NULL;

COMMENT ON VIEW jsrt_dl_oldest_unresolved IS 'Unresolved dead letters with age and state; ORDER BY created_at to see the oldest';

CREATE VIEW jsrt_dl_retry_success_rate AS
SELECT d.tenant_id, d.script_id, s.name AS script_name,
       count(*) AS letters,
       count(*) FILTER (WHERE st.resolution = 'succeeded') AS recovered,
       count(*) FILTER (WHERE st.resolution = 'discarded') AS discarded,
       count(*) FILTER (WHERE st.resolved_at IS NULL AND NOT st.in_flight
                          AND d.retry_count >= st.max_retries) AS exhausted,
       sum(d.retry_count + (st.resolution IS NOT DISTINCT FROM 'succeeded')::int) AS retries,
       round(count(*) FILTER (WHERE st.resolution = 'succeeded')::numeric
             / NULLIF(sum(d.retry_count + (st.resolution IS NOT DISTINCT FROM 'succeeded')::int), 0), 4)
           AS retry_success_rate,
       round(count(*) FILTER (WHERE st.resolution = 'succeeded')::numeric
             / NULLIF(count(*) FILTER (WHERE st.resolution = 'succeeded'
                                          OR (st.resolved_at IS NULL AND NOT st.in_flight
                                              AND d.retry_count >= st.max_retries)), 0), 4)
           AS recovery_rate
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
GROUP BY d.tenant_id, d.script_id, s.name;

COMMENT ON VIEW jsrt_dl_retry_success_rate IS 'Per script: retries run (failed + succeeded), retry_success_rate = succeeded retries / retries, recovery_rate = recovered / (recovered + exhausted) letters';
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP VIEW IF EXISTS jsrt_dl_retry_success_rate;
DROP VIEW IF EXISTS jsrt_dl_oldest_unresolved;
DROP VIEW IF EXISTS jsrt_dl_exhausted_by_tenant;
DROP VIEW IF EXISTS jsrt_dl_failures_24h;
ALTER TABLE jsrt_dead_letter_state DROP COLUMN IF EXISTS max_retries;
-- +migrate StatementEnd
