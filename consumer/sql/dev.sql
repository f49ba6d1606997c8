-- `jsrt dev`: the demo tenant and its example scripts (idempotent: a second run changes nothing).

-- name: demo_tenant
INSERT INTO tenants (id) VALUES ($1::uuid) ON CONFLICT DO NOTHING;

-- name: demo_script
INSERT INTO scripts (tenant_id, name, source, type, status, event_types,
                     cron_expression, http_path, http_methods)
VALUES ($1::uuid, $2, $3, $4, 'active', $5, $6, $7, $8)
ON CONFLICT (tenant_id, name) DO NOTHING;
