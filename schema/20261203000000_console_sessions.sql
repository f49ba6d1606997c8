-- The web console (#18): signed-in sessions. A session belongs to the API key it was signed
-- in with: revoking or deleting the key ends it (the console checks the key on every
-- request, and ON DELETE CASCADE removes the row). Only SHA-256 of the cookie's value is
-- kept, so a copy of the table signs nobody in. tenant_id is the tenant an operator key is
-- looking at (NULL: every tenant); a tenant key's sessions always view the key's own tenant.

-- +migrate Up
CREATE TABLE jsrt_console_sessions (
    id_hash BYTEA PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES jsrt_api_keys(id) ON DELETE CASCADE,
    tenant_id UUID REFERENCES tenants(id) ON DELETE SET NULL,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX jsrt_console_sessions_key ON jsrt_console_sessions (key_id);
CREATE INDEX jsrt_console_sessions_expires ON jsrt_console_sessions (expires_at);
COMMENT ON TABLE jsrt_console_sessions IS
    'Web console sessions: only a hash of the cookie is stored; a revoked key ends them';

-- +migrate Down
DROP TABLE jsrt_console_sessions;
