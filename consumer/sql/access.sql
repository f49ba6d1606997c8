-- Access (#15): API keys, tenant secrets, HMAC replay protection (consumer/keys.py,
-- consumer/secrets.py, consumer/access.py). Every query is keyed by the tenant where there is one.

-- name: key_create
INSERT INTO jsrt_api_keys (id, tenant_id, name, scopes, key_hash)
VALUES ($1, $2::uuid, $3, $4::text[], $5)
RETURNING id, tenant_id, name, scopes, created_at;

-- name: key_lookup
-- A key by its public id (revoked ones too: the caller tells them apart).
SELECT id, tenant_id, name, scopes, key_hash, revoked_at, last_used_at
FROM jsrt_api_keys WHERE id = $1;

-- name: key_touch
-- last_used_at, at most once a minute per key (a write per request would cost more).
UPDATE jsrt_api_keys SET last_used_at = NOW()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < NOW() - interval '1 minute');

-- name: key_list
SELECT id, tenant_id, name, scopes, created_at, last_used_at, revoked_at
FROM jsrt_api_keys
WHERE $1::uuid IS NULL OR tenant_id = $1::uuid OR ($2 AND tenant_id IS NULL)
ORDER BY created_at DESC, id
LIMIT $3;

-- name: key_get
-- One key as listed (the console's revoke; the caller checks the tenant).
SELECT id, tenant_id, name, scopes, created_at, last_used_at, revoked_at
FROM jsrt_api_keys WHERE id = $1;

-- name: key_revoke
UPDATE jsrt_api_keys SET revoked_at = COALESCE(revoked_at, NOW())
WHERE id = $1
RETURNING id, tenant_id, name, revoked_at;

-- name: secret_set
INSERT INTO jsrt_secrets (tenant_id, name, ciphertext) VALUES ($1::uuid, $2, $3)
ON CONFLICT (tenant_id, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = NOW()
RETURNING (xmax = 0) AS created;

-- name: secret_get
SELECT ciphertext FROM jsrt_secrets WHERE tenant_id = $1::uuid AND name = $2;

-- name: secret_list
SELECT tenant_id, name, created_at, updated_at FROM jsrt_secrets
WHERE $1::uuid IS NULL OR tenant_id = $1::uuid
ORDER BY tenant_id, name;

-- name: secret_delete
DELETE FROM jsrt_secrets WHERE tenant_id = $1::uuid AND name = $2 RETURNING name;

-- name: secret_all_ciphertexts
-- For `jsrt secrets rotate`: every secret, to be re-encrypted under the current key.
SELECT tenant_id, name, ciphertext FROM jsrt_secrets ORDER BY tenant_id, name;

-- name: secret_reencrypt
-- Only if it was not changed meanwhile.
UPDATE jsrt_secrets SET ciphertext = $4
WHERE tenant_id = $1::uuid AND name = $2 AND ciphertext = $3;

-- name: signature_seen
-- Record an accepted HMAC signature of tenant $1; false when it was seen before (a replay).
-- Signatures older than $3 seconds can no longer be replayed (their timestamp is stale):
-- they go in the same statement, so the table holds one tolerance window.
WITH swept AS (
    DELETE FROM jsrt_http_signatures WHERE seen_at < NOW() - make_interval(secs => $3)
),
added AS (
    INSERT INTO jsrt_http_signatures (tenant_id, signature) VALUES ($1::uuid, $2)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT NOT EXISTS (SELECT 1 FROM added);
