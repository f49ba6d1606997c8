-- One row per (scheduled script, tick): the database rule that keeps several daemons from
-- firing the same tick twice (script_scheduled_jobs stays exactly as the seed gives it).

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_cron_firings (
    script_id UUID NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    scheduled_for TIMESTAMPTZ NOT NULL,
    fired_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (script_id, scheduled_for)
);

CREATE INDEX idx_jsrt_cron_firings_tenant ON jsrt_cron_firings(tenant_id);
CREATE INDEX idx_jsrt_cron_firings_fired_at ON jsrt_cron_firings(fired_at);

COMMENT ON TABLE jsrt_cron_firings IS 'Each fired tick of each scheduled script, at most once';
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TABLE IF EXISTS jsrt_cron_firings;
-- +migrate StatementEnd
