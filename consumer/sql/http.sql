-- HTTP triggers: the routing lookup. The tenant is always part of the key, so one tenant's
-- path can never resolve to another tenant's script.

-- name: http_route
SELECT e.script_id, e.http_methods, s.metadata
FROM script_http_endpoints e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE e.tenant_id = $1::uuid AND e.http_path = $2 AND e.is_active AND s.status = 'active';

-- name: http_routes
-- http_route for many requests at once (the HTTP server's lookups, batched): a row per
-- request i (1-based) whose route exists; (tenant_id, http_path) is unique.
SELECT w.i, e.script_id, e.http_methods, s.metadata
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS w(tenant_id, path, i)
JOIN script_http_endpoints e ON e.tenant_id = w.tenant_id AND e.http_path = w.path
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE e.is_active AND s.status = 'active';
