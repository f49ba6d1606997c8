-- Run control (#19): cancel and replay of executions.

-- name: executions_cancel
-- Cancel these executions ($3: only in that tenant); one row per id (see jsrt_cancel).
SELECT * FROM jsrt_cancel($1::uuid[], $2, $3::uuid);

-- name: executions_unfinished
-- The unfinished executions of a script ($2: only those of that status, pending or running),
-- oldest first.
SELECT r.execution_id
FROM jsrt_runs r
JOIN script_executions e ON e.id = r.execution_id AND e.tenant_id = r.tenant_id
WHERE r.script_id = $1::uuid AND r.tenant_id = $2::uuid
  AND ($3::text IS NULL OR e.status = $3::text)
ORDER BY r.created_at
LIMIT $4;

-- name: cancels_take
-- The cancelled runs this process had taken, to stop now (each handed out once).
DELETE FROM jsrt_cancels WHERE daemon_id = $1 RETURNING execution_id, cancelled_by;

-- name: replay_select
-- Executions to replay: $1 the ids, or ($2 script, $3 tenant) with statuses $4, started in
-- [$5, $6); with the source version that ran each (the newest version created by the time it
-- started: a version is created with each new source) and the script's current one.
SELECT e.id, e.tenant_id, e.script_id, s.name AS script_name, e.status, e.trigger_type,
       e.started_at,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = e.script_id AND v.tenant_id = e.tenant_id
          AND v.created_at <= e.started_at) AS original_version,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = e.script_id AND v.tenant_id = e.tenant_id) AS current_version
FROM script_executions e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE (($1::uuid[] IS NOT NULL AND e.id = ANY ($1::uuid[]))
       OR ($1::uuid[] IS NULL AND e.script_id = $2::uuid AND e.tenant_id = $3::uuid
           AND e.status = ANY ($4::text[])
           AND ($5::timestamptz IS NULL OR e.started_at >= $5)
           AND ($6::timestamptz IS NULL OR e.started_at < $6)))
  AND e.status NOT IN ('pending', 'running')
ORDER BY e.started_at
LIMIT $7;

-- name: replay_create
-- New pending executions with the originals' input and trigger data, linked by
-- trigger_data.replay_of (an event run starts again at attempt 1, with no dead letter), and
-- runs for any daemon; $2[i] is the source version to run (NULL: the script's current one).
WITH plan AS (
    SELECT p.original, p.version, p.i
    FROM unnest($1::uuid[], $2::int[]) WITH ORDINALITY AS p(original, version, i)
),
orig AS (
    SELECT e.*, plan.version, plan.i FROM plan
    JOIN script_executions e ON e.id = plan.original
    JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
),
execs AS (
    INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, trigger_data, input)
    SELECT o.script_id, o.tenant_id, 'pending', o.trigger_type,
           (COALESCE(o.trigger_data, '{}'::jsonb) - 'dead_letter_id' - 'retry')
           || jsonb_build_object('replay_of', o.id)
           || CASE WHEN o.trigger_type = 'event' THEN jsonb_build_object('attempt', 1)
                   ELSE '{}'::jsonb END
           || CASE WHEN o.version IS NOT NULL THEN jsonb_build_object('replay_version', o.version)
                   ELSE '{}'::jsonb END,
           o.input
    FROM orig o ORDER BY o.i
    RETURNING id, tenant_id, script_id, (trigger_data->>'replay_of')::uuid AS original,
              (trigger_data->>'event_id')::uuid AS event_id, pg_column_size(input) AS input_bytes
),
runs AS (
    -- an event replay takes its place in its key's order (per-key ordering), as a new event
    -- (its input's size: a claim reserves a script's queued runs within a budget of bytes)
    INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, event_id, source_version, order_key,
                           input_bytes)
    SELECT x.id, x.tenant_id, x.script_id, x.event_id, o.version,
           CASE WHEN o.trigger_type = 'event'
                THEN jsonb_path_query_first(o.input, k.path, '{}', true) #>> '{}' END,
           x.input_bytes
    FROM execs x JOIN orig o ON o.id = x.original
    LEFT JOIN jsrt_concurrency_keys k ON k.script_id = x.script_id
    RETURNING execution_id
)
SELECT x.original, x.id AS execution_id FROM execs x JOIN runs r ON r.execution_id = x.id;

-- name: wake_daemons
-- Runs were queued outside a daemon (a replay): wake the daemons (a hint, as jsrt_publish's).
SELECT pg_notify('jsrt_events', '{"queued": true}');
