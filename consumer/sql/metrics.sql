-- Queries of /metrics and /readyz. They aggregate over every tenant on purpose and expose
-- counts only: no tenant id, payload or script leaves the database through them.

-- name: metrics_ping
-- Readiness: the database answers.
SELECT 1;

-- name: metrics_snapshot
-- Queue depth, oldest pending event and dead letters by state, in one round trip. The
-- pending events are read once, through jsrt_events_waiting; dead letters are bounded by
-- retention.
-- A run in a daemon's local queue ('reserved') is pending until its execution shows it
-- started (jsrt_runs holds unfinished runs only, and local queues are short).
WITH runs AS (
    SELECT count(*) FILTER (WHERE NOT x.started) AS pending, count(*) FILTER (WHERE x.started) AS running
    FROM (SELECT r.state = 'running'
                 OR (r.state = 'reserved' AND EXISTS (
                         SELECT 1 FROM script_executions e
                         WHERE e.id = r.execution_id AND e.tenant_id = r.tenant_id
                           AND e.status = 'running')) AS started
          FROM jsrt_runs r) x
),
due AS (
    SELECT count(*) AS n, min(published_at) AS oldest FROM jsrt_events_waiting
)
SELECT
    -- the events still due (the view goes through jsrt_events_due: the history's pending
    -- index is walked over every event dispatched since its last VACUUM)
    (SELECT n FROM due) AS pending_events,
    (SELECT coalesce(extract(epoch FROM NOW() - oldest), 0)::float8 FROM due)
        AS oldest_pending_age_s,
    (SELECT pending FROM runs) AS pending_runs,
    (SELECT running FROM runs) AS running_runs,
    count(*) FILTER (WHERE st.resolved_at IS NULL
                       AND (st.in_flight OR d.retry_count < st.max_retries)) AS dl_retriable,
    count(*) FILTER (WHERE st.resolved_at IS NULL AND NOT st.in_flight
                       AND d.retry_count >= st.max_retries) AS dl_exhausted,
    count(*) FILTER (WHERE st.resolved_at IS NOT NULL) AS dl_resolved
FROM jsrt_dead_letter_state st
JOIN script_event_dead_letters d ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id;
