-- Rate limits across processes (consumer/ratelimit.py, table jsrt_rate_windows).

-- name: rate_acquire
-- Count one call of script $1 in bucket $2 (tenant $3) against limit $4 calls per minute, at
-- $5 (NULL = now): allowed while this window's calls + 1 plus the previous window's, weighted
-- by the share of it still within the last minute, stay within the limit. Returns whether
-- the call was counted (allowed). One statement: concurrent callers serialize on the row;
-- windows too old to matter go in the same statement, so the table stays small.
WITH t AS (
    SELECT COALESCE($5::timestamptz, NOW()) AS now
),
w AS (
    SELECT date_trunc('minute', t.now) AS cur,
           1 - extract(epoch FROM t.now - date_trunc('minute', t.now)) / 60 AS weight
    FROM t
),
prev AS (
    SELECT COALESCE((SELECT r.calls FROM jsrt_rate_windows r, w
                     WHERE r.script_id = $1 AND r.bucket = $2
                       AND r.window_start = w.cur - interval '1 minute'), 0) AS calls
),
stale AS (
    -- the windows of this script and bucket that can no longer be read
    DELETE FROM jsrt_rate_windows r USING w
    WHERE r.script_id = $1 AND r.bucket = $2 AND r.window_start < w.cur - interval '1 minute'
),
counted AS (
    INSERT INTO jsrt_rate_windows AS r (script_id, bucket, window_start, tenant_id, calls)
    SELECT $1, $2, w.cur, $3, 1 FROM w, prev
    WHERE 1 + floor(prev.calls * w.weight) <= $4
    ON CONFLICT (script_id, bucket, window_start) DO UPDATE SET calls = r.calls + 1
    WHERE r.calls + 1 + floor((SELECT calls FROM prev) * (SELECT weight FROM w)) <= $4
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM counted);

