-- HTTP triggers: the routing lookup. The tenant is always part of the key, so one tenant's
-- path can never resolve to another tenant's script.

-- name: http_route
SELECT e.script_id, e.http_methods, s.metadata
FROM script_http_endpoints e
JOIN scripts s ON s.id = e.script_id AND s.tenant_id = e.tenant_id
WHERE e.tenant_id = $1::uuid AND e.http_path = $2 AND e.is_active AND s.status = 'active';
