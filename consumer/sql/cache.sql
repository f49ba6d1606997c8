-- ctx.cache on PostgreSQL (consumer/cache.py, table jsrt_cache). Keys arrive scoped
-- (`tenant:{tenant}:script:{script}:{key}`); $now is the injected clock's time. An expired
-- row reads as missing, and is swept by the next writes: each set or increment deletes up to
-- 16 expired rows of any tenant (on the partial index of expiries), so the table holds little
-- more than the live entries for as long as anyone writes.

-- name: cache_get
SELECT value FROM jsrt_cache
WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2);

-- name: cache_exists
SELECT EXISTS (SELECT 1 FROM jsrt_cache
               WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2));

-- name: cache_set
-- Key $1 of tenant $2 = $3 (jsonb), expiring at $4 (NULL: never), at $5; a new key only
-- while the tenant holds fewer than $6 live entries. Returns 1 when stored.
WITH swept AS (
    DELETE FROM jsrt_cache WHERE key IN (
        SELECT key FROM jsrt_cache WHERE expires_at <= $5 AND key <> $1
        LIMIT 16)
)
INSERT INTO jsrt_cache AS c (key, tenant_id, value, expires_at)
SELECT $1, $2, $3, $4
WHERE EXISTS (SELECT 1 FROM jsrt_cache WHERE key = $1)
   OR (SELECT count(*) FROM jsrt_cache
       WHERE tenant_id = $2 AND (expires_at IS NULL OR expires_at > $5)) < $6
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
RETURNING 1;

-- name: cache_increment
-- Key $1 of tenant $2 += $3 (a missing or expired key starts from 0, without a TTL; a live
-- one keeps its TTL), at $4, within $5 live entries for a new key. Returns the new value.
WITH swept AS (
    DELETE FROM jsrt_cache WHERE key IN (
        SELECT key FROM jsrt_cache WHERE expires_at <= $4 AND key <> $1
        LIMIT 16)
)
INSERT INTO jsrt_cache AS c (key, tenant_id, value, expires_at)
SELECT $1, $2, to_jsonb($3::numeric), NULL
WHERE EXISTS (SELECT 1 FROM jsrt_cache WHERE key = $1)
   OR (SELECT count(*) FROM jsrt_cache
       WHERE tenant_id = $2 AND (expires_at IS NULL OR expires_at > $4)) < $5
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= $4
                 THEN to_jsonb($3::numeric)
                 ELSE to_jsonb((c.value #>> '{}')::numeric + $3::numeric) END,
    expires_at = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= $4
                      THEN NULL ELSE c.expires_at END
RETURNING value;

-- name: cache_delete
-- Whether a live entry was deleted.
DELETE FROM jsrt_cache WHERE key = $1
RETURNING expires_at IS NULL OR expires_at > $2;

-- name: cache_sweep
-- Up to $2 expired entries of any tenant, at $1 (the retention pass).
DELETE FROM jsrt_cache WHERE key IN (
    SELECT key FROM jsrt_cache WHERE expires_at <= $1 LIMIT $2);
