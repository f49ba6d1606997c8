-- The runtime's own tables, beside the seed's seven (which stay exactly as the seed gives them):
--   jsrt_events      the durable event queue: NOTIFY is only a wake-up, this table is the truth
--   jsrt_deliveries  one row per (event, script) first attempt: the database rule behind exactly-once
--   jsrt_runs        executions that are waiting or running, and which daemon runs them
--   jsrt_daemons     live daemons and their heartbeats, so a dead daemon's runs can be rescued
--   jsrt_execution_logs  console lines captured from an execution

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_type VARCHAR(255) NOT NULL CHECK (length(btrim(event_type)) > 0),
    payload JSONB NOT NULL DEFAULT '{}'::jsonb,
    dedup_key TEXT,
    depth INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
    source VARCHAR(50) NOT NULL DEFAULT 'publish' CHECK (source IN ('publish', 'notify', 'script', 'cli')),
    published_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    dispatched_at TIMESTAMPTZ
);

-- Partial: most events have no key, and every index entry is written twice per event
-- (insert, then the non-HOT update of dispatched_at).
CREATE UNIQUE INDEX jsrt_events_dedup_unique ON jsrt_events(tenant_id, dedup_key)
    WHERE dedup_key IS NOT NULL;

CREATE INDEX idx_jsrt_events_pending ON jsrt_events(tenant_id, published_at) WHERE dispatched_at IS NULL;
CREATE INDEX idx_jsrt_events_dispatched ON jsrt_events(dispatched_at) WHERE dispatched_at IS NOT NULL;

COMMENT ON TABLE jsrt_events IS 'Durable domain event queue; pg_notify(jsrt_events) is only a wake-up';
COMMENT ON COLUMN jsrt_events.dedup_key IS 'Optional publisher-supplied id; a second event with the same key is ignored';
COMMENT ON COLUMN jsrt_events.depth IS 'Length of the chain of script-published events that led here (bounded)';
COMMENT ON COLUMN jsrt_events.dispatched_at IS 'When the event was fanned out into executions (NULL: still queued)';

CREATE TABLE jsrt_deliveries (
    event_id UUID NOT NULL REFERENCES jsrt_events(id) ON DELETE CASCADE,
    script_id UUID NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    execution_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (event_id, script_id)
);

CREATE INDEX idx_jsrt_deliveries_tenant ON jsrt_deliveries(tenant_id);

COMMENT ON TABLE jsrt_deliveries IS 'First-attempt execution of each (event, script): the primary key makes a second one impossible';

CREATE TABLE jsrt_daemons (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE jsrt_daemons IS 'Running daemons; a stale heartbeat means the daemon is gone and its runs are rescued';

CREATE TABLE jsrt_runs (
    execution_id UUID PRIMARY KEY REFERENCES script_executions(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    script_id UUID NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
    state VARCHAR(20) NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running')),
    daemon_id TEXT,
    event_id UUID,
    dead_letter_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    started_at TIMESTAMPTZ,
    CONSTRAINT jsrt_runs_running_owner CHECK (state = 'pending' OR daemon_id IS NOT NULL)
);

CREATE INDEX idx_jsrt_runs_pending ON jsrt_runs(script_id, created_at) WHERE state = 'pending';
CREATE INDEX idx_jsrt_runs_running ON jsrt_runs(script_id) WHERE state = 'running';
-- No more: every run is inserted, updated (non-HOT) and deleted, and each index is paid for
-- twice per execution. The table holds only unfinished runs, so the rare scans by daemon or
-- by tenant (a tenant deleted) are cheap without one.

COMMENT ON TABLE jsrt_runs IS 'Executions not yet finished: pending (waiting for a slot) or running (owned by a daemon)';

CREATE TABLE jsrt_execution_logs (
    execution_id UUID PRIMARY KEY REFERENCES script_executions(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    lines JSONB NOT NULL DEFAULT '[]'::jsonb
);

CREATE INDEX idx_jsrt_execution_logs_tenant ON jsrt_execution_logs(tenant_id);

COMMENT ON TABLE jsrt_execution_logs IS 'Console lines captured from an execution (bounded by the sandbox)';
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TABLE IF EXISTS jsrt_execution_logs;
DROP TABLE IF EXISTS jsrt_runs;
DROP TABLE IF EXISTS jsrt_daemons;
DROP TABLE IF EXISTS jsrt_deliveries;
DROP TABLE IF EXISTS jsrt_events;
-- +migrate StatementEnd
