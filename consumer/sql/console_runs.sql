-- The web console's runs pages (#18): executions, dead letters and the overview. Every query takes
-- the viewer's tenant as $1 (NULL only for an operator looking at every tenant) and every join
-- carries tenant_id, so a tenant's session never reaches another tenant's rows. Lists are
-- bounded twice: a page (LIMIT/OFFSET) inside a capped match (the pager's count stops at the
-- cap, and so does paging), read newest first along (tenant_id, started_at|created_at DESC).
-- A uuid taken out of JSON is cast only when it looks like one (trigger_data is jsonb that SQL
-- users may have written by hand).

-- name: console_executions
-- $1 tenant, $2 script id, $3 script name, $4 statuses (NULL: any), $5 trigger types (NULL:
-- any), $6 started at or after, $7 started before, $8 the cap of the match, $9 offset,
-- $10 page size. One row when nothing matches (total 0, the rest NULL).
-- Read tenant by tenant (the LATERAL joins, kept apart by OFFSET 0), each along
-- (tenant_id, started_at DESC): one tenant's page reads offset + size index entries, an
-- operator's every tenant that many per tenant, and the count stops at the cap; never a scan
-- of the whole history (script_executions has no index on started_at alone, and the seed's
-- tables stay as they are). The filters are written twice, alike: keep them in step.
WITH t AS (
    SELECT id FROM tenants WHERE $1::uuid IS NULL OR id = $1::uuid
),
counted AS (
    SELECT count(*) AS total FROM (
        SELECT 1 FROM t CROSS JOIN LATERAL (
            SELECT 1 FROM script_executions e
            WHERE e.tenant_id = t.id
              AND ($2::uuid IS NULL OR e.script_id = $2::uuid)
              AND ($3::text IS NULL OR EXISTS (
                      SELECT 1 FROM scripts s
                      WHERE s.id = e.script_id AND s.tenant_id = e.tenant_id AND s.name = $3::text))
              AND ($4::text[] IS NULL OR e.status = ANY ($4::text[]))
              AND ($5::text[] IS NULL OR e.trigger_type = ANY ($5::text[]))
              AND ($6::timestamptz IS NULL OR e.started_at >= $6::timestamptz)
              AND ($7::timestamptz IS NULL OR e.started_at < $7::timestamptz)
            LIMIT $8
        ) x
        LIMIT $8
    ) c
),
pm AS (
    SELECT x.id, x.tenant_id, x.started_at FROM t CROSS JOIN LATERAL (
        SELECT e.id, e.tenant_id, e.started_at FROM script_executions e
        WHERE e.tenant_id = t.id
          AND ($2::uuid IS NULL OR e.script_id = $2::uuid)
          AND ($3::text IS NULL OR EXISTS (
                  SELECT 1 FROM scripts s
                  WHERE s.id = e.script_id AND s.tenant_id = e.tenant_id AND s.name = $3::text))
          AND ($4::text[] IS NULL OR e.status = ANY ($4::text[]))
          AND ($5::text[] IS NULL OR e.trigger_type = ANY ($5::text[]))
          AND ($6::timestamptz IS NULL OR e.started_at >= $6::timestamptz)
          AND ($7::timestamptz IS NULL OR e.started_at < $7::timestamptz)
        ORDER BY e.started_at DESC, e.id DESC
        LIMIT $9::bigint + $10::bigint
    ) x
    ORDER BY x.started_at DESC, x.id DESC
    OFFSET $9 LIMIT $10
)
SELECT counted.total, p.*
FROM counted
LEFT JOIN LATERAL (
    SELECT e.id, e.tenant_id, coalesce(tn.name, '') AS tenant_name, e.script_id,
           s.name AS script_name, e.status, e.trigger_type, e.started_at, e.completed_at,
           (e.metrics->>'duration_ms')::bigint AS duration_ms,
           left(split_part(e.error, E'\n', 1), 200) AS error
    FROM pm
    JOIN script_executions e ON e.id = pm.id AND e.tenant_id = pm.tenant_id
    JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
    LEFT JOIN tenants tn ON tn.id = e.tenant_id
) p ON true
ORDER BY p.started_at DESC, p.id DESC;

-- name: console_execution
-- One execution with what its page shows: console lines, the version that ran (a replay's
-- replay_version, an unfinished run's source_version, a dead letter's retry_version, else the
-- newest version created by the time it started: a version is created with each new source),
-- the execution it replays, and its dead letter: the one it retries, the one pointing at it
-- as its latest attempt, or (a failed first attempt) the letter made for its event after it
-- started.
WITH e AS (
    SELECT e.*,
           CASE WHEN e.trigger_data->>'dead_letter_id' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN (e.trigger_data->>'dead_letter_id')::uuid END AS retried_letter,
           CASE WHEN e.trigger_data->>'replay_of' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN (e.trigger_data->>'replay_of')::uuid END AS replay_of_id,
           CASE WHEN e.trigger_data->>'event_id' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                THEN (e.trigger_data->>'event_id')::uuid END AS event_uuid,
           CASE WHEN e.trigger_data->>'replay_version' ~ '^[0-9]{1,9}$'
                THEN (e.trigger_data->>'replay_version')::int END AS replay_version
    FROM script_executions e
    WHERE e.id = $2::uuid AND ($1::uuid IS NULL OR e.tenant_id = $1::uuid)
),
letter AS (
    SELECT coalesce(
        (SELECT d.id FROM script_event_dead_letters d
         WHERE d.id = e.retried_letter AND d.tenant_id = e.tenant_id),
        (SELECT d.id FROM script_event_dead_letters d  -- (a finished run only: polls skip it)
         WHERE e.status NOT IN ('pending', 'running')
           AND d.execution_id = e.id AND d.tenant_id = e.tenant_id LIMIT 1),
        (SELECT d.id FROM jsrt_dead_letter_state st
         JOIN script_event_dead_letters d ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id
         WHERE e.trigger_type = 'event' AND e.status IN ('failed', 'timeout', 'cancelled')
           AND e.retried_letter IS NULL
           AND st.tenant_id = e.tenant_id AND st.event_id = e.event_uuid
           AND d.script_id = e.script_id AND d.created_at >= e.started_at
         ORDER BY d.created_at LIMIT 1)) AS id
    FROM e
)
SELECT e.id, e.tenant_id, coalesce(tn.name, '') AS tenant_name, e.script_id,
       s.name AS script_name, s.status AS script_status, e.status, e.trigger_type,
       e.trigger_data, e.input, e.output, e.error, e.metrics, e.started_at, e.completed_at,
       coalesce(l.lines, '[]'::jsonb) AS logs,
       coalesce(e.replay_version, r.source_version,
                (SELECT st.retry_version FROM jsrt_dead_letter_state st
                 WHERE st.dead_letter_id = e.retried_letter AND st.tenant_id = e.tenant_id),
                (SELECT max(v.version_number) FROM script_versions v
                 WHERE v.script_id = e.script_id AND v.tenant_id = e.tenant_id
                   AND v.created_at <= e.started_at)) AS version,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = e.script_id AND v.tenant_id = e.tenant_id) AS current_version,
       (SELECT o.id FROM script_executions o
        WHERE o.id = e.replay_of_id AND o.tenant_id = e.tenant_id) AS replay_of,
       (SELECT letter.id FROM letter) AS dead_letter_id,
       r.state AS run_state
FROM e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
LEFT JOIN tenants tn ON tn.id = e.tenant_id
LEFT JOIN jsrt_execution_logs l ON l.execution_id = e.id AND l.tenant_id = e.tenant_id
LEFT JOIN jsrt_runs r ON r.execution_id = e.id AND r.tenant_id = e.tenant_id;

-- name: console_execution_replays
-- The executions replaying this one (trigger_data.replay_of), newest first: $1 tenant (the
-- execution's own, from console_execution), $2 script, $3 the execution, $4 when it started,
-- $5 how many of the script's executions after it to look through (nothing indexes
-- replay_of: a bounded scan along (tenant_id, started_at)), $6 at most.
SELECT r.id, r.status, r.started_at, r.completed_at
FROM (
    SELECT e.id, e.status, e.started_at, e.completed_at, e.trigger_data
    FROM script_executions e
    WHERE e.tenant_id = $1::uuid AND e.script_id = $2::uuid AND e.started_at >= $4::timestamptz
    ORDER BY e.started_at, e.id
    LIMIT $5
) r
WHERE r.trigger_data->>'replay_of' = $3::text
ORDER BY r.started_at DESC, r.id DESC
LIMIT $6;

-- name: console_dead_letters
-- $1 tenant, $2 script id, $3 script name, $4 states (see dead_letters.sql; NULL: any),
-- $5 event type, $6 created at or after, $7 created before, $8 error text (a substring, any
-- case), $9 the cap of the match, $10 offset, $11 page size. One row when nothing matches.
-- Read as console_executions is, tenant by tenant along (tenant_id, created_at DESC); the
-- filters are written twice, alike: keep them in step.
WITH t AS (
    SELECT id FROM tenants WHERE $1::uuid IS NULL OR id = $1::uuid
),
counted AS (
    SELECT count(*) AS total FROM (
        SELECT 1 FROM t CROSS JOIN LATERAL (
        SELECT d.id, d.tenant_id, d.created_at, y.state
        FROM script_event_dead_letters d
        JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
        JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
        CROSS JOIN LATERAL (
            SELECT CASE WHEN st.resolved_at IS NOT NULL THEN st.resolution
                        WHEN st.in_flight THEN 'in_flight'
                        WHEN d.retry_count >= st.max_retries THEN 'exhausted'
                        WHEN s.status <> 'active' THEN 'waiting_for_script'
                        ELSE 'scheduled' END AS state) y
        WHERE d.tenant_id = t.id
          AND ($2::uuid IS NULL OR d.script_id = $2::uuid)
          AND ($3::text IS NULL OR s.name = $3::text)
          AND ($4::text[] IS NULL OR y.state = ANY ($4::text[]))
          AND ($5::text IS NULL OR d.event_type = $5::text)
          AND ($6::timestamptz IS NULL OR d.created_at >= $6::timestamptz)
          AND ($7::timestamptz IS NULL OR d.created_at < $7::timestamptz)
          AND ($8::text IS NULL OR strpos(lower(d.error), lower($8::text)) > 0)
        LIMIT $9
        ) x
        LIMIT $9
    ) c
),
pm AS (
    SELECT x.id, x.tenant_id, x.created_at, x.state FROM t CROSS JOIN LATERAL (
        SELECT d.id, d.tenant_id, d.created_at, y.state
        FROM script_event_dead_letters d
        JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
        JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
        CROSS JOIN LATERAL (
            SELECT CASE WHEN st.resolved_at IS NOT NULL THEN st.resolution
                        WHEN st.in_flight THEN 'in_flight'
                        WHEN d.retry_count >= st.max_retries THEN 'exhausted'
                        WHEN s.status <> 'active' THEN 'waiting_for_script'
                        ELSE 'scheduled' END AS state) y
        WHERE d.tenant_id = t.id
          AND ($2::uuid IS NULL OR d.script_id = $2::uuid)
          AND ($3::text IS NULL OR s.name = $3::text)
          AND ($4::text[] IS NULL OR y.state = ANY ($4::text[]))
          AND ($5::text IS NULL OR d.event_type = $5::text)
          AND ($6::timestamptz IS NULL OR d.created_at >= $6::timestamptz)
          AND ($7::timestamptz IS NULL OR d.created_at < $7::timestamptz)
          AND ($8::text IS NULL OR strpos(lower(d.error), lower($8::text)) > 0)
        ORDER BY d.created_at DESC, d.id DESC
        LIMIT $10::bigint + $11::bigint
    ) x
    ORDER BY x.created_at DESC, x.id DESC
    OFFSET $10 LIMIT $11
)
SELECT counted.total, p.*
FROM counted
LEFT JOIN LATERAL (
    SELECT d.id, d.tenant_id, coalesce(tn.name, '') AS tenant_name, d.script_id,
           s.name AS script_name, d.event_type, d.retry_count, st.max_retries, pm.state,
           st.next_retry_at, d.last_retry_at, st.resolved_at, d.created_at, d.execution_id,
           left(split_part(d.error, E'\n', 1), 200) AS error
    FROM pm
    JOIN script_event_dead_letters d ON d.id = pm.id AND d.tenant_id = pm.tenant_id
    JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
    JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
    LEFT JOIN tenants tn ON tn.id = d.tenant_id
) p ON true
ORDER BY p.created_at DESC, p.id DESC;

-- name: console_minutes
-- Executions per minute (by started_at) and status over [$2, $3), $1 tenant. Counted tenant
-- by tenant along (tenant_id, started_at DESC) - the grouping inside the LATERAL keeps it a
-- per-tenant index scan, also for an operator's every tenant - never by a scan of the whole
-- history.
SELECT x.minute, x.status, sum(x.n)::int AS n
FROM tenants t
CROSS JOIN LATERAL (
    SELECT date_trunc('minute', e.started_at, 'UTC') AS minute, e.status, count(*) AS n
    FROM script_executions e
    WHERE e.tenant_id = t.id AND e.started_at >= $2::timestamptz AND e.started_at < $3::timestamptz
    GROUP BY 1, 2
) x
WHERE $1::uuid IS NULL OR t.id = $1::uuid
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: console_numbers
-- Queue depth and the oldest pending event (jsrt_events_waiting), runs
-- pending and running (jsrt_runs holds unfinished runs only; a 'reserved' run is running once
-- its execution says so, as metrics_snapshot counts), $1 tenant.
WITH runs AS (
    SELECT count(*) FILTER (WHERE NOT x.started) AS pending,
           count(*) FILTER (WHERE x.started) AS running
    FROM (SELECT r.state = 'running'
                 OR (r.state = 'reserved' AND EXISTS (
                         SELECT 1 FROM script_executions e
                         WHERE e.id = r.execution_id AND e.tenant_id = r.tenant_id
                           AND e.status = 'running')) AS started
          FROM jsrt_runs r
          WHERE $1::uuid IS NULL OR r.tenant_id = $1::uuid) x
)
-- the events still due, read once (jsrt_events_waiting: through jsrt_events_due)
SELECT due.n AS pending_events, due.oldest AS oldest_pending_at,
       runs.pending AS pending_runs, runs.running AS running_runs
FROM runs,
     (SELECT count(*) AS n, min(w.published_at) AS oldest FROM jsrt_events_waiting w
      WHERE $1::uuid IS NULL OR w.tenant_id = $1::uuid) due;

-- name: console_running
-- The runs in progress, longest running first, $1 tenant, $2 at most.
SELECT e.id, e.tenant_id, coalesce(tn.name, '') AS tenant_name, e.script_id,
       s.name AS script_name, e.trigger_type, e.started_at
FROM jsrt_runs r
JOIN script_executions e ON e.id = r.execution_id AND e.tenant_id = r.tenant_id
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
LEFT JOIN tenants tn ON tn.id = e.tenant_id
WHERE ($1::uuid IS NULL OR r.tenant_id = $1::uuid) AND e.status = 'running'
ORDER BY e.started_at, e.id
LIMIT $2;

-- name: console_letter_states
-- Dead letters by state (as dl_list names them), $1 tenant; bounded by retention.
SELECT CASE WHEN st.resolved_at IS NOT NULL THEN st.resolution
            WHEN st.in_flight THEN 'in_flight'
            WHEN d.retry_count >= st.max_retries THEN 'exhausted'
            WHEN s.status <> 'active' THEN 'waiting_for_script'
            ELSE 'scheduled' END AS state,
       count(*)::int AS n
FROM jsrt_dead_letter_state st
JOIN script_event_dead_letters d ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id
JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id
WHERE $1::uuid IS NULL OR st.tenant_id = $1::uuid
GROUP BY 1;

-- name: console_workers
-- The live processes (one row per host and pid: `jsrt run --http` holds two leases in one
-- process) with the memory their last heartbeat recorded (jsrt_daemons.memory). An operator
-- ($1 NULL) sees every process with its host and pid; a tenant only the processes holding its
-- runs or slot leases now, without host or pid (the machines are the operator's business).
-- $2: silent longer than this many seconds = not live.
SELECT DISTINCT ON (d.hostname, d.pid)
       CASE WHEN $1::uuid IS NULL THEN d.id END AS id,
       split_part(d.id, ':', 1) AS kind,
       CASE WHEN $1::uuid IS NULL THEN d.hostname END AS hostname,
       CASE WHEN $1::uuid IS NULL THEN d.pid END AS pid,
       d.started_at, d.heartbeat_at, d.memory
FROM jsrt_daemons d
WHERE d.heartbeat_at >= NOW() - make_interval(secs => $2)
  AND ($1::uuid IS NULL
       OR EXISTS (SELECT 1 FROM jsrt_runs r WHERE r.daemon_id = d.id AND r.tenant_id = $1::uuid)
       OR EXISTS (SELECT 1 FROM jsrt_leases l WHERE l.daemon_id = d.id AND l.tenant_id = $1::uuid))
ORDER BY d.hostname, d.pid, d.memory IS NULL, d.heartbeat_at DESC
LIMIT 100;
