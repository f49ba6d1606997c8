-- Script management (`jsrt scripts`), execution history (`jsrt executions`) and runs started
-- now (HTTP, `jsrt exec`, the embedded Runtime). The operator CLI may leave the tenant open
-- ($n::uuid IS NULL); every other caller names it.

-- name: start_now
-- Runs started now, many requests in one statement (jsrt_start_now_v3 in schema/functions/):
-- for each, by its place in the arrays, 'started' with a running execution owned by $1 (the
-- caller's lease), 'full' when the script is at its max_concurrent_runs, or 'missing'. The
-- trigger data and the input to keep are JSON text, checked by the caller. $7/$8: the versions
-- whose source the caller holds (a run of one comes without it).
SELECT n.ord, n.state, n.run
FROM jsrt_start_now_v3($1, $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                       $7::uuid[], $8::text[]) n;

-- name: embedded_script
-- The 'embedded' script holding an ad-hoc source ($2 = name derived from source + limits).
-- The name promises the source and limits: a row edited since (by SQL or `jsrt scripts
-- update`) is set back to them (a new version), never run as it was edited.
WITH ins AS (
    INSERT INTO scripts (tenant_id, name, description, source, type, status, resource_limits)
    VALUES ($1::uuid, $2, 'ad-hoc source run through the embedded API', $3, 'embedded', 'active',
            $4::jsonb)
    ON CONFLICT (tenant_id, name) DO UPDATE
        SET source = EXCLUDED.source, resource_limits = EXCLUDED.resource_limits
        WHERE scripts.type = 'embedded'
          AND (scripts.source IS DISTINCT FROM EXCLUDED.source
               OR scripts.resource_limits IS DISTINCT FROM EXCLUDED.resource_limits)
    RETURNING id
)
SELECT id FROM ins
UNION ALL
SELECT s.id FROM scripts s WHERE s.tenant_id = $1::uuid AND s.name = $2 AND s.type = 'embedded'
LIMIT 1;

-- name: script_by_id
SELECT id, tenant_id, name FROM scripts
WHERE id = $1::uuid AND ($2::uuid IS NULL OR tenant_id = $2::uuid);

-- name: script_by_name
SELECT id, tenant_id, name FROM scripts WHERE tenant_id = $1::uuid AND name = $2;

-- name: script_show
SELECT s.id, s.tenant_id, s.name, s.description, s.type, s.status, s.source, s.resource_limits,
       s.cron_expression, s.metadata->>'timezone' AS timezone, s.http_path, s.http_methods,
       s.event_types, s.metadata, s.tags, s.created_at, s.updated_at,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = s.id AND v.tenant_id = s.tenant_id) AS version,
       j.next_run_at, j.last_run_at, j.last_run_status
FROM scripts s
LEFT JOIN script_scheduled_jobs j ON j.script_id = s.id AND j.tenant_id = s.tenant_id
WHERE s.id = $1::uuid AND s.tenant_id = $2::uuid;

-- name: script_list
SELECT s.id, s.tenant_id, s.name, s.type, s.status,
       COALESCE(s.cron_expression, s.http_path, array_to_string(s.event_types, ',')) AS trigger,
       s.updated_at,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = s.id AND v.tenant_id = s.tenant_id) AS version
FROM scripts s
WHERE ($1::uuid IS NULL OR s.tenant_id = $1::uuid)
  AND ($2::text IS NULL OR s.type = $2) AND ($3::text IS NULL OR s.status = $3)
ORDER BY s.tenant_id, s.name
LIMIT $4;

-- name: script_create
INSERT INTO scripts (tenant_id, name, description, source, type, status, resource_limits,
                     cron_expression, http_path, http_methods, event_types, metadata)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::text[], $11::text[], $12::jsonb)
RETURNING id;

-- name: script_update
-- Every editable column at once: the caller merged and validated the whole script.
UPDATE scripts
SET name = $3, description = $4, source = $5, type = $6, resource_limits = $7::jsonb,
    cron_expression = $8, http_path = $9, http_methods = $10::text[], event_types = $11::text[],
    metadata = $12::jsonb
WHERE id = $1::uuid AND tenant_id = $2::uuid
RETURNING id;

-- name: script_set_status
UPDATE scripts SET status = $3
WHERE id = $1::uuid AND tenant_id = $2::uuid
RETURNING id, status;

-- name: script_versions
-- Current: the newest version with the script's source (a rollback makes a new version with
-- an older version's source: only the new one is current).
SELECT v.version_number, v.created_at, v.change_description, length(v.source) AS size,
       v.version_number = (SELECT max(c.version_number) FROM script_versions c
                           WHERE c.script_id = v.script_id AND c.tenant_id = v.tenant_id
                             AND c.source = s.source) AS current
FROM script_versions v
JOIN scripts s ON s.id = v.script_id AND s.tenant_id = v.tenant_id
WHERE v.script_id = $1::uuid AND v.tenant_id = $2::uuid
ORDER BY v.version_number DESC;

-- name: script_delete_preview
-- What deleting a script takes with it (everything goes by ON DELETE CASCADE).
SELECT (SELECT count(*) FROM script_versions v
        WHERE v.script_id = s.id AND v.tenant_id = s.tenant_id) AS versions,
       (SELECT count(*) FROM script_executions e
        WHERE e.script_id = s.id AND e.tenant_id = s.tenant_id) AS executions,
       (SELECT count(*) FROM jsrt_runs r
        WHERE r.script_id = s.id AND r.tenant_id = s.tenant_id) AS unfinished,
       (SELECT count(*) FROM script_event_dead_letters d
        WHERE d.script_id = s.id AND d.tenant_id = s.tenant_id) AS dead_letters
FROM scripts s WHERE s.id = $1::uuid AND s.tenant_id = $2::uuid;

-- name: script_delete
-- The counts of script_delete_preview, taken under the row lock of the delete itself.
WITH gone AS (
    DELETE FROM scripts s WHERE s.id = $1::uuid AND s.tenant_id = $2::uuid
    RETURNING s.id, s.tenant_id
)
SELECT (SELECT count(*) FROM script_versions v
        WHERE v.script_id = g.id AND v.tenant_id = g.tenant_id) AS versions,
       (SELECT count(*) FROM script_executions e
        WHERE e.script_id = g.id AND e.tenant_id = g.tenant_id) AS executions,
       (SELECT count(*) FROM jsrt_runs r
        WHERE r.script_id = g.id AND r.tenant_id = g.tenant_id) AS unfinished,
       (SELECT count(*) FROM script_event_dead_letters d
        WHERE d.script_id = g.id AND d.tenant_id = g.tenant_id) AS dead_letters
FROM gone g;

-- name: script_version_source
SELECT source FROM script_versions
WHERE script_id = $1::uuid AND tenant_id = $2::uuid AND version_number = $3;

-- name: executions_list
-- $1 tenant, $2 script id, $3 status, $4 started since, $5 limit, $6 script name (any tenant
-- unless $1 says which).
SELECT e.id, e.tenant_id, e.script_id, s.name AS script_name, e.status, e.trigger_type,
       e.started_at, e.completed_at, (e.metrics->>'duration_ms')::bigint AS duration_ms,
       left(split_part(e.error, E'\n', 1), 120) AS error
FROM script_executions e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE ($1::uuid IS NULL OR e.tenant_id = $1::uuid)
  AND ($2::uuid IS NULL OR e.script_id = $2::uuid)
  AND ($6::text IS NULL OR s.name = $6::text)
  AND ($3::text IS NULL OR e.status = $3)
  AND ($4::timestamptz IS NULL OR e.started_at >= $4)
ORDER BY e.started_at DESC
LIMIT $5;

-- name: execution_show
SELECT e.id, e.tenant_id, e.script_id, s.name AS script_name, e.status, e.trigger_type,
       e.trigger_data, e.input, e.output, e.error, e.metrics, e.started_at, e.completed_at,
       COALESCE(l.lines, '[]'::jsonb) AS logs
FROM script_executions e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
LEFT JOIN jsrt_execution_logs l ON l.execution_id = e.id AND l.tenant_id = e.tenant_id
WHERE e.id = $1::uuid AND ($2::uuid IS NULL OR e.tenant_id = $2::uuid);

-- name: event_filter_check
-- A payload filter as PostgreSQL reads it: the cast raises its own message when it cannot
-- parse it; true when it is no predicate (its result on a document is not one boolean).
SELECT '{}'::jsonb @@ $1::text::jsonpath IS NULL;

-- name: concurrency_key_check
-- A concurrency key's path as PostgreSQL reads it (the cast raises its own message).
SELECT $1::text::jsonpath IS NOT NULL;

-- name: script_browse
-- The console's scripts list: $1 tenant (NULL: every tenant, operators), $2 search words
-- (the seed's full-text index on name and description, or a part of the name), $3 type,
-- $4 status, $5 tag, $6 limit, $7 offset. `total` is the count of the whole filtered set;
-- the last execution is looked up for the rows of the page only.
WITH page AS (
SELECT s.id, s.tenant_id, s.name, s.description, s.type, s.status, s.tags,
       COALESCE(s.cron_expression, s.http_path, array_to_string(s.event_types, ', ')) AS trigger,
       s.updated_at,
       (SELECT max(v.version_number) FROM script_versions v
        WHERE v.script_id = s.id AND v.tenant_id = s.tenant_id) AS version,
       count(*) OVER () AS total,
       -- the best matches first (by the full-text rank), then by name
       row_number() OVER (ORDER BY CASE WHEN $2::text IS NULL THEN 0 ELSE ts_rank(
           to_tsvector('english', coalesce(s.name, '') || ' ' || coalesce(s.description, '')),
           websearch_to_tsquery('english', $2)) END DESC, s.name, s.tenant_id) AS ord
FROM scripts s
WHERE ($1::uuid IS NULL OR s.tenant_id = $1::uuid)
  AND ($2::text IS NULL
       OR to_tsvector('english', coalesce(s.name, '') || ' ' || coalesce(s.description, ''))
          @@ websearch_to_tsquery('english', $2)
       OR s.name ILIKE '%' || replace(replace(replace($2, '\', '\\'), '%', '\%'), '_', '\_') || '%')
  AND ($3::text IS NULL OR s.type = $3) AND ($4::text IS NULL OR s.status = $4)
  AND ($5::text IS NULL OR s.tags @> ARRAY[$5::text])
ORDER BY ord
LIMIT $6 OFFSET $7
)
SELECT p.*, e.started_at AS last_run_at, e.status AS last_run_status
FROM page p
LEFT JOIN LATERAL (
    SELECT x.started_at, x.status FROM script_executions x
    WHERE x.tenant_id = p.tenant_id AND x.script_id = p.id
    ORDER BY x.started_at DESC LIMIT 1
) e ON true
ORDER BY p.ord;

-- name: script_tags
-- The tags in use in a tenant (NULL: every tenant), for the console's filter.
SELECT DISTINCT tag FROM scripts s, unnest(s.tags) AS tag
WHERE $1::uuid IS NULL OR s.tenant_id = $1::uuid
ORDER BY tag LIMIT 200;
