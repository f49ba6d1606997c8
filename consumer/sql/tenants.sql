-- Tenants (`jsrt tenants`). In an IOTA SDK database the table is the host's: it may have
-- more columns than the runtime's minimal one (id, name, created_at), so only `name` is
-- written and anything else is read through to_jsonb, present or not.

-- name: tenant_create
INSERT INTO tenants (name) VALUES ($1) RETURNING id;

-- name: tenant_list
-- $1 limit. Newest first; a host table without created_at lists by id.
SELECT t.id, to_jsonb(t)->>'name' AS name,
       (SELECT count(*) FROM scripts s WHERE s.tenant_id = t.id) AS scripts,
       (to_jsonb(t)->>'created_at')::timestamptz AS created_at
FROM tenants t
ORDER BY created_at DESC NULLS LAST, t.id
LIMIT $1;

-- name: tenant_names
-- The web console's tenant selector (operators): tenants by name.
SELECT t.id, to_jsonb(t)->>'name' AS name FROM tenants t
ORDER BY to_jsonb(t)->>'name' NULLS LAST, t.id
LIMIT $1;
