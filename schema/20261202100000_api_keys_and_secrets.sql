-- Access (#15): API keys, tenant secrets, and the HMAC signatures already seen.
--
-- jsrt_api_keys: a key is `jsrt_<id>_<secret>`; only HMAC-SHA256(pepper, secret) is kept.
-- tenant_id NULL is an operator key (every tenant). Revoked keys stay, for the record.
-- jsrt_secrets: a tenant's named secrets, encrypted by the runtime (Fernet, the key from
-- JSRT_SECRETS_KEY); the database never sees a value in the clear.
-- jsrt_http_signatures: signatures of accepted HMAC requests, kept for the tolerance window
-- (replay protection); the statement that records one deletes the expired ones.

-- +migrate Up
CREATE TABLE jsrt_api_keys (
    id TEXT PRIMARY KEY,
    tenant_id UUID REFERENCES tenants(id) ON DELETE CASCADE,
    name VARCHAR(255) NOT NULL,
    scopes TEXT[] NOT NULL DEFAULT '{}',
    key_hash BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX jsrt_api_keys_tenant ON jsrt_api_keys (tenant_id);
COMMENT ON TABLE jsrt_api_keys IS
    'API keys for what comes over HTTP: only a keyed hash of the secret part is stored';

CREATE TABLE jsrt_secrets (
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name VARCHAR(128) NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, name)
);
COMMENT ON TABLE jsrt_secrets IS
    'Tenant secrets, encrypted with JSRT_SECRETS_KEY (Fernet tokens)';

CREATE TABLE jsrt_http_signatures (
    tenant_id UUID NOT NULL,
    signature TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, signature)
);
CREATE INDEX jsrt_http_signatures_seen ON jsrt_http_signatures (seen_at);
COMMENT ON TABLE jsrt_http_signatures IS
    'HMAC request signatures accepted within the tolerance window (replay protection)';

-- +migrate Down
DROP TABLE jsrt_http_signatures;
DROP TABLE jsrt_secrets;
DROP TABLE jsrt_api_keys;
