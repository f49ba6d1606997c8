-- Scripts' access to their tenant's data (ctx.db) and their cache (ctx.cache).
--
-- ctx.db runs each statement under the NOLOGIN role jsrt_tenant_data, in a transaction that
-- binds the tenant (`jsrt.tenant_id`, set by the runtime from the execution, never by the
-- script). The role is granted nothing but what `jsrt db expose` grants on each exposed
-- table, and every exposed table gets FORCE ROW LEVEL SECURITY with a policy for that role
-- comparing its tenant_id with the bound tenant. Roles are cluster-wide (and tests clone
-- databases), so the role is created only when missing; grants are per database.
--
-- jsrt_cache is ctx.cache's PostgreSQL store: UNLOGGED (a cache: a crash may empty it), keys
-- already scoped `tenant:{tenant}:script:{script}:{key}`, expired rows swept.

-- +migrate Up
-- +migrate StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jsrt_tenant_data') THEN
        CREATE ROLE jsrt_tenant_data NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
            NOBYPASSRLS;
    END IF;
    -- the runtime's own user must be able to SET ROLE to it
    IF NOT pg_has_role(current_user, 'jsrt_tenant_data', 'MEMBER') THEN
        EXECUTE format('GRANT jsrt_tenant_data TO %I', current_user);
    END IF;
END
$$;
-- +migrate StatementEnd

-- The tenant binding is signed, so that it holds even against SQL that got past the parser:
-- the runtime binds `jsrt.tenant_id` to jsrt_sign_tenant(tenant) = '<uuid>.<sha256(secret ||
-- uuid)>' before it switches to the role, and the policies compare tenant_id with
-- jsrt_bound_tenant(), which returns the uuid only when the signature is right. The role can
-- set the setting to anything (set_config is everyone's), but it can neither read the secret
-- nor call jsrt_sign_tenant, so it cannot forge another tenant's binding.
CREATE TABLE jsrt_data_secret (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    secret TEXT NOT NULL
);
INSERT INTO jsrt_data_secret (secret) VALUES (gen_random_uuid()::text || gen_random_uuid()::text);
REVOKE ALL ON jsrt_data_secret FROM PUBLIC;
COMMENT ON TABLE jsrt_data_secret IS 'The key of ctx.db''s signed tenant binding (never granted)';

-- +migrate StatementBegin
CREATE FUNCTION jsrt_sign_tenant(p_tenant UUID) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT p_tenant::text || '.' || encode(sha256(convert_to(s.secret || p_tenant::text, 'UTF8')), 'hex')
    FROM jsrt_data_secret s
$$;
-- +migrate StatementEnd
REVOKE EXECUTE ON FUNCTION jsrt_sign_tenant(UUID) FROM PUBLIC;

-- +migrate StatementBegin
CREATE FUNCTION jsrt_bound_tenant() RETURNS UUID
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT CASE WHEN split_part(b.v, '.', 2) = encode(sha256(convert_to(
                         s.secret || split_part(b.v, '.', 1), 'UTF8')), 'hex')
                THEN split_part(b.v, '.', 1)::uuid END
    FROM (SELECT NULLIF(current_setting('jsrt.tenant_id', true), '') AS v) b, jsrt_data_secret s
    WHERE b.v IS NOT NULL
$$;
-- +migrate StatementEnd
GRANT EXECUTE ON FUNCTION jsrt_bound_tenant() TO jsrt_tenant_data;

CREATE TABLE jsrt_exposed_tables (
    table_schema TEXT NOT NULL,
    table_name TEXT NOT NULL,
    writable BOOLEAN NOT NULL DEFAULT FALSE,
    columns TEXT[],  -- NULL: every column
    exposed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (table_schema, table_name)
);
COMMENT ON TABLE jsrt_exposed_tables IS
    'Tables scripts may reach through ctx.db (jsrt db expose/hide), each under row-level security by tenant_id';

-- +migrate StatementBegin
CREATE FUNCTION jsrt_expose_table(p_table REGCLASS, p_writable BOOLEAN, p_columns TEXT[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    v_schema TEXT;
    v_name TEXT;
    v_cols TEXT;
    v_seq TEXT;
BEGIN
    SELECT n.nspname, c.relname INTO v_schema, v_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = p_table AND c.relkind IN ('r', 'p');
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'jsrt_expose_table: % is not a table', p_table
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = p_table AND attname = 'tenant_id' AND NOT attisdropped
                     AND atttypid = 'uuid'::regtype) THEN
        RAISE EXCEPTION 'jsrt_expose_table: % has no tenant_id uuid column', p_table
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    IF p_columns IS NOT NULL AND EXISTS (
        SELECT 1 FROM unnest(p_columns) AS col
        WHERE NOT EXISTS (SELECT 1 FROM pg_attribute
                          WHERE attrelid = p_table AND attname = col AND attnum > 0
                            AND NOT attisdropped)) THEN
        RAISE EXCEPTION 'jsrt_expose_table: % has no column named %', p_table,
            (SELECT string_agg(col, ', ') FROM unnest(p_columns) AS col
             WHERE NOT EXISTS (SELECT 1 FROM pg_attribute
                               WHERE attrelid = p_table AND attname = col AND attnum > 0
                                 AND NOT attisdropped))
            USING ERRCODE = 'undefined_column';
    END IF;
    -- start from nothing: exposing again replaces the grants
    EXECUTE format('REVOKE ALL ON %s FROM jsrt_tenant_data', p_table);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO jsrt_tenant_data', v_schema);
    IF p_columns IS NULL THEN
        EXECUTE format('GRANT SELECT%s ON %s TO jsrt_tenant_data',
                       CASE WHEN p_writable THEN ', INSERT, UPDATE, DELETE' ELSE '' END, p_table);
    ELSE
        SELECT string_agg(format('%I', col), ', ') INTO v_cols FROM unnest(p_columns) AS col;
        EXECUTE format('GRANT SELECT (%s) ON %s TO jsrt_tenant_data', v_cols, p_table);
        IF p_writable THEN
            EXECUTE format('GRANT INSERT (%s), UPDATE (%s), DELETE ON %s TO jsrt_tenant_data',
                           v_cols, v_cols, p_table);
        END IF;
    END IF;
    -- a writer needs the sequences of its serial and identity columns
    FOR v_seq IN SELECT pg_get_serial_sequence(p_table::text, attname) FROM pg_attribute
                 WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped
                   AND pg_get_serial_sequence(p_table::text, attname) IS NOT NULL LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM jsrt_tenant_data', v_seq);
        IF p_writable THEN
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO jsrt_tenant_data', v_seq);
        END IF;
    END LOOP;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS jsrt_tenant_isolation ON %s', p_table);
    EXECUTE format('DROP POLICY IF EXISTS jsrt_tenant_isolation_strict ON %s', p_table);
    -- an unbound or forged binding is NULL: no row matches, none can be written; the
    -- sub-select makes it one evaluation per statement, not one per row. The permissive
    -- policy grants the role its tenant's rows; the restrictive one, with the same test,
    -- keeps any permissive policy of the host's (say one TO PUBLIC USING (true), which the
    -- role would get too) from widening that.
    EXECUTE format('CREATE POLICY jsrt_tenant_isolation ON %s TO jsrt_tenant_data '
                   'USING (tenant_id = (SELECT jsrt_bound_tenant())) '
                   'WITH CHECK (tenant_id = (SELECT jsrt_bound_tenant()))', p_table);
    EXECUTE format('CREATE POLICY jsrt_tenant_isolation_strict ON %s AS RESTRICTIVE '
                   'TO jsrt_tenant_data '
                   'USING (tenant_id = (SELECT jsrt_bound_tenant())) '
                   'WITH CHECK (tenant_id = (SELECT jsrt_bound_tenant()))', p_table);
    INSERT INTO jsrt_exposed_tables (table_schema, table_name, writable, columns)
    VALUES (v_schema, v_name, p_writable, p_columns)
    ON CONFLICT (table_schema, table_name) DO UPDATE
        SET writable = EXCLUDED.writable, columns = EXCLUDED.columns, exposed_at = NOW();
END
$$;
-- +migrate StatementEnd

-- +migrate StatementBegin
-- Hiding revokes the role's grants and drops the policy; row-level security stays enabled
-- (it may have been the host's own choice, and without a policy for other roles it changes
-- nothing for the table's owner, who is exempt unless FORCE: FORCE is lifted).
CREATE FUNCTION jsrt_hide_table(p_schema TEXT, p_name TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    v_table REGCLASS := to_regclass(format('%I.%I', p_schema, p_name));
    v_seq TEXT;
BEGIN
    IF v_table IS NOT NULL THEN
        EXECUTE format('REVOKE ALL ON %s FROM jsrt_tenant_data', v_table);
        FOR v_seq IN SELECT pg_get_serial_sequence(v_table::text, attname) FROM pg_attribute
                     WHERE attrelid = v_table AND attnum > 0 AND NOT attisdropped
                       AND pg_get_serial_sequence(v_table::text, attname) IS NOT NULL LOOP
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM jsrt_tenant_data', v_seq);
        END LOOP;
        EXECUTE format('DROP POLICY IF EXISTS jsrt_tenant_isolation ON %s', v_table);
        EXECUTE format('DROP POLICY IF EXISTS jsrt_tenant_isolation_strict ON %s', v_table);
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', v_table);
    END IF;
    DELETE FROM jsrt_exposed_tables WHERE table_schema = p_schema AND table_name = p_name;
    RETURN FOUND;
END
$$;
-- +migrate StatementEnd

CREATE UNLOGGED TABLE jsrt_cache (
    key TEXT PRIMARY KEY,  -- tenant:{tenant_id}:script:{script_id}:{key}
    tenant_id UUID NOT NULL,
    value JSONB NOT NULL,
    expires_at TIMESTAMPTZ  -- NULL: no TTL
);
CREATE INDEX jsrt_cache_tenant ON jsrt_cache (tenant_id);
CREATE INDEX jsrt_cache_expiry ON jsrt_cache (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE jsrt_cache IS 'ctx.cache entries (a cache: unlogged, expired rows swept)';

-- +migrate Down
-- +migrate StatementBegin
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT table_schema, table_name FROM jsrt_exposed_tables LOOP
        PERFORM jsrt_hide_table(r.table_schema, r.table_name);
    END LOOP;
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM jsrt_tenant_data';
END
$$;
-- +migrate StatementEnd
DROP TABLE jsrt_cache;
DROP FUNCTION jsrt_hide_table(TEXT, TEXT);
DROP FUNCTION jsrt_expose_table(REGCLASS, BOOLEAN, TEXT[]);
DROP TABLE jsrt_exposed_tables;
DROP FUNCTION jsrt_bound_tenant();
DROP FUNCTION jsrt_sign_tenant(UUID);
DROP TABLE jsrt_data_secret;
