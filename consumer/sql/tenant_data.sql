-- Scripts' access to their tenant's data: ctx.db (consumer/tenant_data.py) and the tables
-- exposed to it (jsrt db expose/list/hide). Migration 20261202200000_tenant_data.sql.

-- name: data_bind
-- The start of every ctx.db transaction, before the script's statement: tenant $1 bound
-- (signed: see jsrt_sign_tenant in the migration), statement_timeout $2 (ms, as text), and the
-- role that can reach only the exposed tables, all local to the transaction (gone at its end,
-- before the connection goes back to the pool). The signature is made before the role is.
SELECT set_config('jsrt.tenant_id', jsrt_sign_tenant($1::uuid), true),
       set_config('statement_timeout', $2, true),
       set_config('role', 'jsrt_tenant_data', true);

-- name: data_begin_bound
-- data_bind and the BEGIN before it in one round trip (a simple query, so no parameters):
-- formatted with {mode} (READ ONLY or READ WRITE), {tenant} (a UUID the runtime parsed) and
-- {timeout_ms} (an integer), never with anything a script wrote.
BEGIN {mode};
SELECT set_config('jsrt.tenant_id', jsrt_sign_tenant('{tenant}'), true),
       set_config('statement_timeout', '{timeout_ms}', true),
       set_config('role', 'jsrt_tenant_data', true);

-- name: data_timeout
-- statement_timeout $1 (ms, as text) for the next statement of a held transaction.
SELECT set_config('statement_timeout', $1, true);

-- name: data_commit
COMMIT;

-- name: data_rollback
ROLLBACK;

-- name: data_exposed
-- The exposed tables, as scripts may name them.
SELECT table_schema, table_name, writable, columns, exposed_at
FROM jsrt_exposed_tables
ORDER BY table_schema, table_name;

-- name: data_expose
-- Expose table $1 (a name as an operator writes it) with writes $2 and columns $3 (NULL: all).
SELECT jsrt_expose_table($1::text::regclass, $2, $3);

-- name: data_hide
-- Hide exposed table $1.$2; whether it was exposed.
SELECT jsrt_hide_table($1, $2);

-- name: data_resolve
-- Schema and name of table $1 as an operator writes it (NULL: no such table).
SELECT n.nspname AS table_schema, c.relname AS table_name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1);
