-- Every query the runtime sends, by name. Each one carries tenant_id where it touches
-- tenant data; $now parameters let tests inject the clock (NULL = the database's now()).

-- name: register_daemon
-- $4: the process's memory (jsrt_daemons.memory; NULL keeps what an earlier beat recorded).
INSERT INTO jsrt_daemons (id, hostname, pid, memory) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = NOW(), memory = COALESCE(EXCLUDED.memory, jsrt_daemons.memory);

-- name: unregister_daemon
DELETE FROM jsrt_daemons WHERE id = $1;

-- name: enqueue_event
-- Store an event (tenant, type, payload, dedup key, depth, source); returns its id.
SELECT jsrt_enqueue($1::uuid, $2, $3::jsonb, $4, $5, $6);

-- name: tenant_exists
SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1::uuid);

-- name: claim
-- Dispatch due events and start runs for this daemon in one statement (see jsrt_claim in
-- triggers.sql): the started runs, then a summary row with the counts. Tenant JSON (input,
-- resource_limits, trigger_data) comes back as text: the daemon passes input on to V8 as it
-- is, and decodes the rest itself, so no value a tenant wrote can fail the whole claim.
SELECT c.execution_id, c.tenant_id, c.script_id, c.source, c.version_id,
       c.resource_limits::text AS resource_limits, c.input::text AS input, c.trigger_type,
       c.trigger_data::text AS trigger_data, c.event_id, c.dead_letter_id, c.depth,
       c.events, c.created, c.queued, c.by_source, c.more, c.waiting
FROM jsrt_claim($1, $2, $3, $4::uuid, $5, $6, $7::uuid, $8) c;

-- name: claim_leased
-- Refill the local queues of the scripts whose slots this daemon holds, take free slots of
-- scripts with pending runs ($11 of the $5 slots at most: the rest only for the scripts of
-- the events fanned out), fan due events out (jsrt_claim_v5 in schema/functions/): one
-- statement, one round trip, one commit. One row. $12/$13: the versions whose source this
-- process holds (a run of one comes without it); $14: each tenant's budget of payload bytes;
-- $15: the most slots this daemon may hold of one tenant's scripts.
SELECT * FROM jsrt_claim_v5($1, $2, $3, $4::uuid, $5, $6, $7::uuid, $8, $9::uuid[], $10::int[],
                            $11, $12::uuid[], $13::text[], $14, $15);

-- name: complete_runs
-- Record finished executions, but only those this daemon still owns: a run rescued from a
-- daemon presumed dead is never overwritten by that daemon's late result. Outputs and
-- metrics arrive as JSON text, one element per execution: a jsonb[] parameter built from
-- Python lists would be read as a multi-dimensional array when an output is itself an
-- array, and unnest would flatten it into other executions' rows. started_at/completed_at
-- are the times the run really started and ended (NULL: now, and the start kept).
-- Planned for a table whose statistics lag (a fresh database, a burst): the rows are found
-- by primary key only - `= ANY ($2)` is an index condition on it, and the other conditions
-- are wrapped in IS TRUE so that no index on tenant_id or daemon_id looks like a way in (with
-- stale estimates the planner took idx_executions_trigger_type, reading a tenant's every
-- execution for each result, and a nested loop over jsrt_runs: 0.5 s for 200 results).
WITH res AS (
    SELECT r.execution_id, r.tenant_id, r.status, r.output::jsonb AS output, r.error,
           r.metrics::jsonb AS metrics, r.started_at, r.completed_at
    FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::timestamptz[], $9::timestamptz[])
        AS r(execution_id, tenant_id, status, output, error, metrics, started_at, completed_at)
),
mine AS (
    DELETE FROM jsrt_runs r USING res
    WHERE r.execution_id = ANY ($2::uuid[]) AND r.execution_id = res.execution_id
      AND (r.tenant_id = res.tenant_id AND r.daemon_id = $1
           AND r.state IN ('running', 'reserved')) IS TRUE
    RETURNING r.execution_id, r.dead_letter_id
)
UPDATE script_executions e
SET status = res.status, output = res.output, error = res.error, metrics = res.metrics,
    started_at = COALESCE(res.started_at, e.started_at),
    completed_at = COALESCE(res.completed_at, NOW())
FROM res JOIN mine USING (execution_id)
WHERE e.id = ANY ($2::uuid[]) AND e.id = res.execution_id AND (e.tenant_id = res.tenant_id) IS TRUE
-- trigger_data only for failures: only dead-lettering reads it back
RETURNING e.id, e.tenant_id, e.script_id, e.status, e.error, e.trigger_type,
          CASE WHEN e.status <> 'completed' THEN e.trigger_data::text END AS trigger_data,
          mine.dead_letter_id;

-- name: mark_and_release
-- Runs of this daemon's local queues that have been running a while are shown as running
-- (their true start; a short run is written once, when it ends), and slots this daemon no
-- longer needs are given back: $4 holds each script's count, a lease at zero goes (but for
-- the scripts a claim is taking slots of right now: returned in `later`, to give back again).
-- Rows by primary key only (see complete_runs).
WITH marked AS (
    UPDATE script_executions e SET status = 'running', started_at = m.started_at
    FROM unnest($2::uuid[], $3::timestamptz[]) AS m(execution_id, started_at)
    JOIN jsrt_runs r ON r.execution_id = m.execution_id
    WHERE e.id = ANY ($2::uuid[]) AND r.execution_id = ANY ($2::uuid[])
      AND e.id = m.execution_id
      AND (e.tenant_id = r.tenant_id AND e.status = 'pending' AND r.daemon_id = $1
           AND r.state = 'reserved') IS TRUE
    RETURNING e.id
),
released AS (
    -- a function: its statements see a grant committed meanwhile (jsrt_release_slots_v3)
    SELECT jsrt_release_slots_v3($1, $4::uuid[], $5::int[]) AS later
)
SELECT (SELECT count(*) FROM marked) AS marked, (SELECT later FROM released) AS later;

-- name: unreserve_runs
-- Give runs of this daemon's local queues that it did not start back to the queue.
UPDATE jsrt_runs r SET state = 'pending', daemon_id = NULL
WHERE r.execution_id = ANY ($2::uuid[]) AND r.daemon_id = $1 AND r.state = 'reserved'
RETURNING r.execution_id;

-- name: release_leases
-- Every slot this daemon holds (it stops, or starts afresh).
DELETE FROM jsrt_leases WHERE daemon_id = $1 RETURNING script_id;

-- name: save_logs
-- $3 holds each execution's lines as JSON text: a jsonb[] of lists would be read as a
-- multi-dimensional array and unnest would flatten it line by line.
INSERT INTO jsrt_execution_logs (execution_id, tenant_id, lines)
SELECT l.execution_id, l.tenant_id, l.lines::jsonb
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS l(execution_id, tenant_id, lines)
ON CONFLICT (execution_id) DO UPDATE SET lines = EXCLUDED.lines;

-- name: release_runs
-- Give runs that this daemon could not finish back to the queue, for any daemon to take.
WITH released AS (
    UPDATE jsrt_runs r SET state = 'pending', daemon_id = NULL, started_at = NULL
    WHERE r.execution_id = ANY ($2::uuid[]) AND r.daemon_id = $1
      AND r.state IN ('running', 'reserved')
    RETURNING r.execution_id, r.tenant_id
)
UPDATE script_executions e SET status = 'pending'
FROM released WHERE e.id = released.execution_id AND (e.tenant_id = released.tenant_id) IS TRUE
RETURNING e.id;

-- name: rescue_lost_runs
-- Runs owned by a daemon whose heartbeat is older than $1 seconds: those it had started
-- (running, or reserved and shown as started) are closed as "worker lost" and handed to the
-- dead-letter path by the caller; those still waiting in its local queue are queued again
-- (nothing of them ran that anyone saw); its slot leases go.
WITH dead AS (
    SELECT r.execution_id, r.tenant_id, r.dead_letter_id,
           r.state = 'reserved' AND e.status = 'pending' AS waiting
    FROM jsrt_runs r
    JOIN script_executions e ON e.id = r.execution_id AND (e.tenant_id = r.tenant_id) IS TRUE
    WHERE r.state IN ('running', 'reserved')
      AND NOT EXISTS (
          SELECT 1 FROM jsrt_daemons d
          WHERE d.id = r.daemon_id
            AND d.heartbeat_at > COALESCE($2::timestamptz, NOW()) - make_interval(secs => $1))
),
requeued AS (
    UPDATE jsrt_runs r SET state = 'pending', daemon_id = NULL
    FROM dead WHERE r.execution_id = dead.execution_id AND dead.waiting
    RETURNING r.execution_id
),
freed AS (
    DELETE FROM jsrt_leases l
    WHERE NOT EXISTS (
        SELECT 1 FROM jsrt_daemons d
        WHERE d.id = l.daemon_id
          AND d.heartbeat_at > COALESCE($2::timestamptz, NOW()) - make_interval(secs => $1))
    RETURNING l.script_id
),
lost AS (
    DELETE FROM jsrt_runs r USING dead
    WHERE r.execution_id = dead.execution_id AND NOT dead.waiting
    RETURNING r.execution_id, r.tenant_id, r.dead_letter_id
)
UPDATE script_executions e
SET status = 'failed', error = 'worker lost', completed_at = COALESCE($2::timestamptz, NOW())
FROM lost
WHERE e.id = lost.execution_id AND (e.tenant_id = lost.tenant_id) IS TRUE
RETURNING e.id, e.tenant_id, e.script_id, e.status, e.error, e.trigger_type,
          e.trigger_data::text AS trigger_data, lost.dead_letter_id;

-- name: forget_dead_daemons
DELETE FROM jsrt_daemons
WHERE heartbeat_at < COALESCE($2::timestamptz, NOW()) - make_interval(secs => $1 * 10);

-- name: dead_letter_new
-- A first failure of an event execution: a new letter, due for retry at $next. The event's
-- payload is copied from the execution row in the database (never round-tripped through
-- the daemon), so every payload a script could receive can be dead-lettered.
WITH failed AS (
    SELECT f.execution_id, f.tenant_id, f.error, f.next_retry_at
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
        AS f(execution_id, tenant_id, error, next_retry_at)
),
letters AS (
    INSERT INTO script_event_dead_letters (script_id, tenant_id, execution_id, event_type, event_data, error)
    SELECT e.script_id, e.tenant_id, e.id, COALESCE(e.trigger_data->>'event_type', ''),
           COALESCE(e.input, '{}'::jsonb), f.error
    FROM failed f JOIN script_executions e ON e.id = f.execution_id AND (e.tenant_id = f.tenant_id) IS TRUE
    RETURNING id, tenant_id, script_id, execution_id
),
meta AS (
    SELECT l.*, ((e.trigger_data->>'event_id'))::uuid AS event_id, s.resource_limits,
           -- per-key ordering (#19): the letter holds its key until it succeeds or is exhausted
           (SELECT jsonb_path_query_first(e.input, k.path, '{}', true) #>> '{}'
            FROM jsrt_concurrency_keys k WHERE k.script_id = l.script_id) AS order_key,
           (SELECT max(v.version_number) FROM script_versions v
            WHERE v.script_id = l.script_id AND v.tenant_id = l.tenant_id
              AND md5(v.source) = md5(s.source)) AS version
    FROM letters l
    JOIN script_executions e ON e.id = l.execution_id AND (e.tenant_id = l.tenant_id) IS TRUE
    JOIN scripts s ON s.id = l.script_id AND s.tenant_id = l.tenant_id
)
INSERT INTO jsrt_dead_letter_state (dead_letter_id, tenant_id, event_id, script_version, resource_limits, next_retry_at, order_key)
SELECT m.id, m.tenant_id, m.event_id, m.version, m.resource_limits, f.next_retry_at, m.order_key
FROM meta m JOIN failed f ON f.execution_id = m.execution_id
RETURNING dead_letter_id,
          (SELECT l.execution_id FROM letters l WHERE l.id = dead_letter_id) AS execution_id;

-- name: dead_letter_retry_failed
-- A retry failed: count it, point the letter at the newest attempt, plan the next retry
-- (NULL once exhausted).
-- last_retry_at is when the attempt ended (its execution's completed_at).
WITH upd AS (
    UPDATE script_event_dead_letters d
    SET retry_count = d.retry_count + 1,
        last_retry_at = COALESCE((SELECT e.completed_at FROM script_executions e
                                  WHERE e.id = r.execution_id AND (e.tenant_id = r.tenant_id) IS TRUE),
                                 NOW()),
        execution_id = r.execution_id, error = r.error
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS r(id, tenant_id, execution_id, error)
    WHERE d.id = r.id AND d.tenant_id = r.tenant_id
    RETURNING d.id, d.tenant_id, d.retry_count
)
UPDATE jsrt_dead_letter_state st
SET in_flight = false,
    next_retry_at = CASE WHEN upd.retry_count >= st.max_retries THEN NULL ELSE n.next_retry_at END
FROM upd JOIN unnest($1::uuid[], $5::timestamptz[]) AS n(id, next_retry_at) ON n.id = upd.id
WHERE st.dead_letter_id = upd.id AND st.tenant_id = upd.tenant_id
RETURNING st.dead_letter_id, upd.retry_count, st.next_retry_at IS NULL AS exhausted;

-- name: dead_letter_resolved
-- A retry completed: the letter is resolved, and its last_retry_at is this retry's. (Its
-- retry_count keeps counting failed retries only, as the review views expect.)
-- $3: the executions that completed (their completed_at is the letter's last_retry_at).
WITH resolved AS (
    UPDATE jsrt_dead_letter_state st
    SET in_flight = false, resolved_at = NOW(), resolution = 'succeeded', next_retry_at = NULL
    FROM unnest($1::uuid[], $2::uuid[]) AS r(id, tenant_id)
    WHERE st.dead_letter_id = r.id AND st.tenant_id = r.tenant_id
    RETURNING st.dead_letter_id, st.tenant_id
)
UPDATE script_event_dead_letters d
SET last_retry_at = COALESCE((SELECT e.completed_at FROM script_executions e
                              WHERE e.id = x.execution_id AND (e.tenant_id = r.tenant_id) IS TRUE), NOW())
FROM resolved r JOIN unnest($1::uuid[], $3::uuid[]) AS x(id, execution_id)
  ON x.id = r.dead_letter_id
WHERE d.id = r.dead_letter_id AND d.tenant_id = r.tenant_id
RETURNING d.id AS dead_letter_id, d.retry_count;

-- name: claim_retries
-- Due, unresolved, not exhausted letters of active scripts become new pending executions
-- (attempt = retry_count + 2). in_flight keeps a second daemon from retrying the same letter.
-- max_retries is 3 unless an operator granted an exhausted letter one more attempt.
WITH due AS (
    SELECT d.id, d.tenant_id, d.script_id, d.event_type, d.event_data, d.retry_count, st.event_id,
           d.execution_id
    FROM jsrt_dead_letter_state st
    JOIN script_event_dead_letters d ON d.id = st.dead_letter_id AND d.tenant_id = st.tenant_id
    JOIN scripts s ON s.id = d.script_id AND s.tenant_id = d.tenant_id AND s.status = 'active'
    WHERE st.resolved_at IS NULL AND NOT st.in_flight AND d.retry_count < st.max_retries
      AND st.next_retry_at <= COALESCE($2::timestamptz, NOW())
    ORDER BY st.next_retry_at
    LIMIT $1
    FOR UPDATE OF st SKIP LOCKED
),
flagged AS (
    UPDATE jsrt_dead_letter_state st SET in_flight = true
    FROM due WHERE st.dead_letter_id = due.id AND st.tenant_id = due.tenant_id
    RETURNING st.dead_letter_id
),
execs AS (
    -- The whole original trigger (published_at, depth, ...) carries over from the attempt
    -- the letter points at: a retried chain keeps its depth, so its limit still holds.
    INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, trigger_data, input)
    SELECT due.script_id, due.tenant_id, 'pending', 'event',
           COALESCE(prev.trigger_data, '{}'::jsonb)
           || jsonb_build_object('type', 'event', 'event_id', due.event_id, 'event_type', due.event_type,
                                 'attempt', due.retry_count + 2, 'dead_letter_id', due.id,
                                 'retry', due.retry_count + 1),
           due.event_data
    FROM due JOIN flagged f ON f.dead_letter_id = due.id
    LEFT JOIN script_executions prev ON prev.id = due.execution_id AND prev.tenant_id = due.tenant_id
    RETURNING id, tenant_id, script_id, (trigger_data->>'dead_letter_id')::uuid AS dead_letter_id,
              (trigger_data->>'event_id')::uuid AS event_id, pg_column_size(input) AS input_bytes
)
-- (a letter retried with --version original runs the version it recorded: retry_version)
-- (and a letter's key orders its retries: #19)
-- (and its input's size: a claim reserves a script's queued runs within a budget of bytes)
INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, event_id, dead_letter_id, source_version,
                       order_key, input_bytes)
SELECT x.id, x.tenant_id, x.script_id, x.event_id, x.dead_letter_id, st.retry_version, st.order_key,
       x.input_bytes
FROM execs x
LEFT JOIN jsrt_dead_letter_state st ON st.dead_letter_id = x.dead_letter_id AND st.tenant_id = x.tenant_id
RETURNING execution_id;

-- name: pending_work
-- Is anything left for a drain-mode daemon to do?
SELECT EXISTS (SELECT 1 FROM jsrt_events_waiting)
    OR EXISTS (SELECT 1 FROM jsrt_runs)
    OR EXISTS (SELECT 1 FROM jsrt_dead_letter_state st
               JOIN script_event_dead_letters d ON d.id = st.dead_letter_id
               JOIN scripts s ON s.id = d.script_id AND s.status = 'active'
               WHERE st.resolved_at IS NULL AND d.retry_count < st.max_retries
                 AND (st.in_flight OR st.next_retry_at <= COALESCE($1::timestamptz, NOW())))
    OR EXISTS (SELECT 1 FROM script_scheduled_jobs j
               JOIN scripts s ON s.id = j.script_id AND s.tenant_id = j.tenant_id
               WHERE s.status = 'active' AND s.type = 'scheduled' AND NOT j.is_running
                 AND j.next_run_at <= COALESCE($1::timestamptz, NOW()));

-- name: cron_due_jobs
-- Jobs of active scheduled scripts whose tick has come (running ones too: their tick is
-- skipped, never run beside them). '-infinity' means "not planned yet".
SELECT j.script_id, j.tenant_id, j.cron_expression, j.timezone, j.next_run_at, j.is_running
FROM script_scheduled_jobs j
JOIN scripts s ON s.id = j.script_id AND s.tenant_id = j.tenant_id
WHERE s.status = 'active' AND s.type = 'scheduled' AND j.next_run_at <= $1::timestamptz
ORDER BY j.next_run_at
LIMIT $2
FOR UPDATE OF j SKIP LOCKED;

-- name: cron_fire
-- Fire ticks: a firing row per (script, tick) - a duplicate fires nothing - then a pending
-- execution and run for each new firing, and the job marked running with its next tick.
WITH plan AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int[], $5::text[],
                         $6::timestamptz[])
        AS p(script_id, tenant_id, scheduled_for, missed, iso, next_run_at)
),
fired AS (
    INSERT INTO jsrt_cron_firings (script_id, tenant_id, scheduled_for)
    SELECT script_id, tenant_id, scheduled_for FROM plan
    ON CONFLICT (script_id, scheduled_for) DO NOTHING
    RETURNING script_id, tenant_id, scheduled_for
),
execs AS (
    INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, trigger_data, input)
    SELECT p.script_id, p.tenant_id, 'pending', 'cron',
           jsonb_build_object('type', 'cron', 'scheduled_for', p.iso, 'missed_ticks', p.missed),
           jsonb_build_object('scheduled_for', p.iso)
    FROM plan p JOIN fired f ON f.script_id = p.script_id AND f.scheduled_for = p.scheduled_for
    RETURNING id, tenant_id, script_id
),
runs AS (
    INSERT INTO jsrt_runs (execution_id, tenant_id, script_id)
    SELECT id, tenant_id, script_id FROM execs
    RETURNING execution_id, script_id
)
UPDATE script_scheduled_jobs j
SET next_run_at = p.next_run_at,
    is_running = j.is_running OR EXISTS (SELECT 1 FROM runs r WHERE r.script_id = p.script_id)
FROM plan p
WHERE j.script_id = p.script_id AND j.tenant_id = p.tenant_id
RETURNING j.script_id, j.is_running;

-- name: cron_replan
-- A planned job is valid again: a fixed schedule no longer reads 'invalid'.
UPDATE script_scheduled_jobs j
SET next_run_at = p.next_run_at,
    last_run_status = NULLIF(j.last_run_status, 'invalid')
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS p(script_id, tenant_id, next_run_at)
WHERE j.script_id = p.script_id AND j.tenant_id = p.tenant_id;

-- name: cron_invalid
-- Parked until the script is fixed (the sync trigger re-plans on a cron/timezone change).
UPDATE script_scheduled_jobs j SET last_run_status = 'invalid', next_run_at = 'infinity'
FROM unnest($1::uuid[], $2::uuid[]) AS p(script_id, tenant_id)
WHERE j.script_id = p.script_id AND j.tenant_id = p.tenant_id;

-- name: cron_finished
UPDATE script_scheduled_jobs j
SET is_running = false, last_run_at = NOW(), last_run_status = p.status
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS p(script_id, tenant_id, status)
WHERE j.script_id = p.script_id AND j.tenant_id = p.tenant_id;

-- name: raw_ingest_try_lock
-- Held for the life of the listener's session: its holder alone stores raw NOTIFY events.
SELECT pg_try_advisory_lock($1);
