-- Dead letters for operators (`jsrt dead-letters ...`). Operators may pass a tenant ($tenant
-- NULL = every tenant); joins always carry tenant_id. A letter's state, in this order:
-- succeeded | discarded (resolved: kept, marked, never deleted by a resolution),
-- in_flight (a retry is pending or running), exhausted (retry_count >= max_retries),
-- waiting_for_script (the script is not active: retried once it is), scheduled.
-- retry_count counts failed retries (as the seed and the review views have it); retries_used
-- adds the retry that succeeded, for people.

-- name: dl_list
-- $1 tenant, $2 script (id or name), $3 event type, $4 exhausted only, $5 created since,
-- $6 include resolved letters, $7 limit (NULL = all).
SELECT d.id, d.tenant_id, coalesce(t.name, '') AS tenant_name, d.script_id,
       s.name AS script_name, d.event_type, d.retry_count, st.max_retries,
       d.retry_count + (st.resolution IS NOT DISTINCT FROM 'succeeded')::int AS retries_used,
       CASE WHEN st.resolved_at IS NOT NULL THEN st.resolution
            WHEN st.in_flight THEN 'in_flight'
            WHEN d.retry_count >= st.max_retries THEN 'exhausted'
            WHEN s.status <> 'active' THEN 'waiting_for_script'
            ELSE 'scheduled' END AS state,
       st.next_retry_at, d.last_retry_at, st.resolved_at, d.created_at, d.execution_id,
       split_part(d.error, E'\n', 1) AS error
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
JOIN tenants t ON t.id = d.tenant_id
WHERE ($1::uuid IS NULL OR d.tenant_id = $1::uuid)
  AND ($2::text IS NULL OR d.script_id::text = $2::text OR s.name = $2::text)
  AND ($3::text IS NULL OR d.event_type = $3::text)
  AND (NOT $4::boolean
       OR (st.resolved_at IS NULL AND NOT st.in_flight AND d.retry_count >= st.max_retries))
  AND ($5::timestamptz IS NULL OR d.created_at >= $5::timestamptz)
  AND ($6::boolean OR st.resolved_at IS NULL)
ORDER BY d.created_at DESC, d.id
LIMIT $7;

-- name: dl_show
-- One letter with everything needed to reproduce it: payload, full error, script version and
-- resource limits in effect at the failure.
SELECT d.id, d.tenant_id, coalesce(t.name, '') AS tenant_name, d.script_id,
       s.name AS script_name, s.status AS script_status, d.event_type, d.event_data, d.error,
       d.retry_count, st.max_retries, d.execution_id, d.last_retry_at, d.created_at,
       d.retry_count + (st.resolution IS NOT DISTINCT FROM 'succeeded')::int AS retries_used,
       st.event_id, st.script_version, st.resource_limits, st.next_retry_at, st.in_flight,
       st.resolved_at, st.resolution,
       CASE WHEN st.resolved_at IS NOT NULL THEN st.resolution
            WHEN st.in_flight THEN 'in_flight'
            WHEN d.retry_count >= st.max_retries THEN 'exhausted'
            WHEN s.status <> 'active' THEN 'waiting_for_script'
            ELSE 'scheduled' END AS state
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
JOIN tenants t ON t.id = d.tenant_id
WHERE d.id = $1::uuid AND ($2::uuid IS NULL OR d.tenant_id = $2::uuid);

-- name: dl_attempts
-- Every execution of a letter: the original (attempt 1 of its event for this script) and each
-- retry (trigger_data.dead_letter_id), in attempt order. $1 tenant, $2 script, $3 letter,
-- $4 event id, $5 the letter's current execution.
SELECT e.id, COALESCE((e.trigger_data->>'attempt')::int, 1) AS attempt, e.status, e.error,
       e.started_at, e.completed_at, e.trigger_data ? 'dead_letter_id' AS is_retry
FROM script_executions e
WHERE e.tenant_id = $1::uuid AND e.script_id = $2::uuid AND e.trigger_type = 'event'
  AND (e.trigger_data->>'dead_letter_id' = $3::text
       OR e.id = $5::uuid
       OR (e.trigger_data->>'event_id' = $4::text AND NOT e.trigger_data ? 'dead_letter_id'))
ORDER BY 2, e.started_at;

-- name: dl_retry
-- Due now, whatever the count: an exhausted letter is granted exactly one more attempt
-- (max_retries = retry_count + 1). Resolved and in-flight letters are left alone. The daemons'
-- claim_retries does the rest (once the script is active). $4: the source version its
-- retries run from now on, 'original' (the one the letter recorded) or 'current' (NULL:
-- unchanged).
WITH target AS (
    SELECT d.id, d.tenant_id, d.retry_count
    FROM script_event_dead_letters d
    JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
    WHERE d.id = ANY ($1::uuid[]) AND ($2::uuid IS NULL OR d.tenant_id = $2::uuid)
      AND st.resolved_at IS NULL AND NOT st.in_flight
    FOR UPDATE OF st
)
UPDATE jsrt_dead_letter_state st
SET next_retry_at = COALESCE($3::timestamptz, NOW()),
    max_retries = GREATEST(st.max_retries, t.retry_count + 1),
    retry_version = CASE $4::text WHEN 'original' THEN st.script_version
                                  WHEN 'current' THEN NULL ELSE st.retry_version END
FROM target t
WHERE st.dead_letter_id = t.id AND st.tenant_id = t.tenant_id
RETURNING st.dead_letter_id;

-- name: dl_discard
-- Resolved as discarded: kept (marked, not deleted) for review, never retried again.
UPDATE jsrt_dead_letter_state st
SET resolved_at = COALESCE($3::timestamptz, NOW()), resolution = 'discarded', next_retry_at = NULL
FROM script_event_dead_letters d
WHERE d.id = ANY ($1::uuid[]) AND ($2::uuid IS NULL OR d.tenant_id = $2::uuid)
  AND st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
  AND st.resolved_at IS NULL AND NOT st.in_flight
RETURNING st.dead_letter_id;

-- name: dl_lookup
-- Why a letter was not retried or discarded: absent, resolved or in flight.
SELECT d.id, st.resolution, st.in_flight
FROM script_event_dead_letters d
JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
WHERE d.id = ANY ($1::uuid[]) AND ($2::uuid IS NULL OR d.tenant_id = $2::uuid);
