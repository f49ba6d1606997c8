-- The web console (#18): sessions (consumer/sessions.py) and what its pages read beyond the
-- CLI's queries. A session is looked up by the hash of its cookie, with its key: a revoked
-- key, an absolute expiry or an idle one ends it.

-- name: console_session_create
-- Also sweeps up to 64 expired sessions of anyone (the table holds live sessions only).
WITH swept AS (
    DELETE FROM jsrt_console_sessions
    WHERE id_hash IN (SELECT id_hash FROM jsrt_console_sessions
                      WHERE expires_at < NOW() OR last_seen < NOW() - make_interval(secs => $5)
                      LIMIT 64)
)
INSERT INTO jsrt_console_sessions (id_hash, key_id, tenant_id, csrf_token, expires_at)
VALUES ($1, $2, $3::uuid, $4, NOW() + make_interval(secs => $6))
RETURNING created_at, expires_at;

-- name: console_session_lookup
-- $1 hash, $2 idle seconds. The session and its key as they are now; `live` false when the
-- session expired (absolutely or idle) or its key was revoked: the caller deletes it.
SELECT s.key_id, s.tenant_id, s.csrf_token, s.created_at, s.expires_at, s.last_seen,
       k.tenant_id AS key_tenant_id, k.name AS key_name, k.scopes,
       (k.revoked_at IS NULL AND s.expires_at > NOW()
        AND s.last_seen > NOW() - make_interval(secs => $2)) AS live,
       t.name AS tenant_name
FROM jsrt_console_sessions s
JOIN jsrt_api_keys k ON k.id = s.key_id
LEFT JOIN tenants t ON t.id = COALESCE(k.tenant_id, s.tenant_id)
WHERE s.id_hash = $1;

-- name: console_session_touch
-- last_seen (the idle expiry), at most every 30 s per session.
UPDATE jsrt_console_sessions SET last_seen = NOW()
WHERE id_hash = $1 AND last_seen < NOW() - interval '30 seconds';

-- name: console_session_tenant
-- An operator's choice of tenant (NULL: every tenant); false when there is no such tenant.
UPDATE jsrt_console_sessions SET tenant_id = $2::uuid
WHERE id_hash = $1 AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM tenants WHERE id = $2::uuid))
RETURNING true;

-- name: console_session_delete
DELETE FROM jsrt_console_sessions WHERE id_hash = $1;

-- name: console_sessions_of_key
-- A revoked key's sessions end with it.
DELETE FROM jsrt_console_sessions WHERE key_id = $1;

-- name: console_reveal_put
-- $1 ticket hash, $2 session hash, $3 sealed key, $4 seconds it may wait. Also sweeps
-- reveals nobody came for.
WITH swept AS (
    DELETE FROM jsrt_console_reveals WHERE expires_at < NOW()
)
INSERT INTO jsrt_console_reveals (ticket_hash, session_hash, sealed, expires_at)
VALUES ($1, $2, $3, NOW() + make_interval(secs => $4));

-- name: console_reveal_take
-- The one showing: gone once read, whether or not it was still in time.
DELETE FROM jsrt_console_reveals
WHERE ticket_hash = $1 AND session_hash = $2
RETURNING sealed, expires_at > NOW() AS live;
