-- Retention (`jsrt cleanup`, and the daemon every JSRT_CLEANUP_INTERVAL seconds).
-- Each query deletes at most $2 rows older than the cutoff $1 in one short statement (the
-- caller loops until a batch comes back short), or with $3 = true deletes nothing and counts
-- every row it would delete ($2 NULL = no limit). Rows are picked by ctid, so each batch is
-- one TID scan; a row changed meanwhile has a new ctid and is left alone.

-- name: cleanup_dead_letters
-- The seed's rule: letters created before the cutoff with retry_count >= 3 - but never one
-- with a retry in flight or still planned (an operator granted it another attempt).
WITH doomed AS (
    SELECT d.ctid AS tid FROM script_event_dead_letters d
    LEFT JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
    WHERE d.created_at < $1::timestamptz AND d.retry_count >= 3
      AND NOT COALESCE(st.in_flight, false) AND st.next_retry_at IS NULL
    LIMIT $2
),
gone AS (
    DELETE FROM script_event_dead_letters x
    WHERE x.ctid = ANY (ARRAY(SELECT tid FROM doomed)) AND NOT $3::boolean
    RETURNING 1
)
SELECT CASE WHEN $3::boolean THEN (SELECT count(*) FROM doomed) ELSE (SELECT count(*) FROM gone) END;

-- name: cleanup_executions
-- The seed's rule: finished executions (completed, failed, timeout) started before the cutoff,
-- except those an unresolved dead letter points at (the FK would cascade and delete the letter).
-- A resolved letter goes with the execution it points at.
WITH doomed AS (
    SELECT e.ctid AS tid FROM script_executions e
    WHERE e.started_at < $1::timestamptz AND e.status IN ('completed', 'failed', 'timeout')
      AND NOT EXISTS (
          SELECT 1 FROM script_event_dead_letters d
          LEFT JOIN jsrt_dead_letter_state st
            ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
          WHERE d.execution_id = e.id AND d.tenant_id = e.tenant_id AND st.resolved_at IS NULL)
    LIMIT $2
),
gone AS (
    DELETE FROM script_executions x
    WHERE x.ctid = ANY (ARRAY(SELECT tid FROM doomed)) AND NOT $3::boolean
    RETURNING 1
)
SELECT CASE WHEN $3::boolean THEN (SELECT count(*) FROM doomed) ELSE (SELECT count(*) FROM gone) END;

-- name: cleanup_events
-- Queue rows fanned out before the cutoff (their jsrt_deliveries rows go with them). A
-- publisher's dedup_key is therefore remembered for this long.
WITH doomed AS (
    SELECT e.ctid AS tid FROM jsrt_events e
    WHERE e.dispatched_at < $1::timestamptz
    LIMIT $2
),
gone AS (
    DELETE FROM jsrt_events x
    WHERE x.ctid = ANY (ARRAY(SELECT tid FROM doomed)) AND NOT $3::boolean
    RETURNING 1
)
SELECT CASE WHEN $3::boolean THEN (SELECT count(*) FROM doomed) ELSE (SELECT count(*) FROM gone) END;

-- name: cleanup_cron_firings
-- Fired ticks recorded before the cutoff (only recent ticks can be fired again).
WITH doomed AS (
    SELECT f.ctid AS tid FROM jsrt_cron_firings f
    WHERE f.fired_at < $1::timestamptz
    LIMIT $2
),
gone AS (
    DELETE FROM jsrt_cron_firings x
    WHERE x.ctid = ANY (ARRAY(SELECT tid FROM doomed)) AND NOT $3::boolean
    RETURNING 1
)
SELECT CASE WHEN $3::boolean THEN (SELECT count(*) FROM doomed) ELSE (SELECT count(*) FROM gone) END;

