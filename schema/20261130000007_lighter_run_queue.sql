-- Foreign keys that the hot path paid for on every execution without gaining anything:
-- a run's tenant and script are those of its execution (jsrt_runs.execution_id already
-- cascades from script_executions, which cascades from scripts and tenants), and a
-- delivery's tenant is its event's (jsrt_deliveries.event_id cascades from jsrt_events,
-- which cascades from tenants). Each one was a lookup and a row lock per insert. The
-- deliveries' tenant index served only that foreign key's cascade.

-- +migrate Up
ALTER TABLE jsrt_runs DROP CONSTRAINT jsrt_runs_tenant_id_fkey;
ALTER TABLE jsrt_runs DROP CONSTRAINT jsrt_runs_script_id_fkey;
ALTER TABLE jsrt_deliveries DROP CONSTRAINT jsrt_deliveries_tenant_id_fkey;
DROP INDEX idx_jsrt_deliveries_tenant;

-- +migrate Down
CREATE INDEX idx_jsrt_deliveries_tenant ON jsrt_deliveries(tenant_id);
ALTER TABLE jsrt_deliveries ADD CONSTRAINT jsrt_deliveries_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;
ALTER TABLE jsrt_runs ADD CONSTRAINT jsrt_runs_script_id_fkey
    FOREIGN KEY (script_id) REFERENCES scripts(id) ON DELETE CASCADE;
ALTER TABLE jsrt_runs ADD CONSTRAINT jsrt_runs_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;
