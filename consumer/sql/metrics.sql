-- Queries of /metrics and /readyz. They aggregate over every tenant on purpose and expose
-- counts only: no tenant id, payload or script leaves the database through them.

-- name: metrics_ping
-- Readiness: the database answers.
SELECT 1;

-- name: metrics_snapshot
-- Queue depth, oldest pending event and dead letters by state, in one round trip. The
-- pending-event aggregates read the partial index of undispatched events; dead letters are
-- bounded by retention.
SELECT
    (SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL) AS pending_events,
    (SELECT coalesce(extract(epoch FROM NOW() - min(published_at)), 0)::float8
     FROM jsrt_events WHERE dispatched_at IS NULL) AS oldest_pending_age_s,
    (SELECT count(*) FROM jsrt_runs WHERE state = 'pending') AS pending_runs,
    (SELECT count(*) FROM jsrt_runs WHERE state = 'running') AS running_runs,
    count(*) FILTER (WHERE st.resolved_at IS NULL
                       AND (st.in_flight OR d.retry_count < st.max_retries)) AS dl_retriable,
    count(*) FILTER (WHERE st.resolved_at IS NULL AND NOT st.in_flight
                       AND d.retry_count >= st.max_retries) AS dl_exhausted,
    count(*) FILTER (WHERE st.resolved_at IS NOT NULL) AS dl_resolved
FROM jsrt_dead_letter_state st
JOIN script_event_dead_letters d ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id;
