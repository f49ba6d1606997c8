-- Cancel (#19): `jsrt executions cancel` ends an unfinished execution 'cancelled' at once
-- (jsrt_cancel in schema/functions/routing.sql). A run that a process had already taken (in
-- a daemon's local queue, or running) must also be stopped by that process: it is told here,
-- and by a NOTIFY hint on jsrt_cancel; each process takes its rows on the hint or on its
-- next heartbeat (NOTIFY is only a hint), and the row goes with the process's lease.

-- +migrate Up
CREATE TABLE jsrt_cancels (
    execution_id UUID PRIMARY KEY,
    daemon_id TEXT NOT NULL REFERENCES jsrt_daemons(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL,
    cancelled_by TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_jsrt_cancels_daemon ON jsrt_cancels(daemon_id);
COMMENT ON TABLE jsrt_cancels IS
    'Cancelled runs that a process had taken: it stops them (drops them from its local queue, terminates their step)';

-- +migrate Down
DROP FUNCTION IF EXISTS jsrt_cancel(UUID[], TEXT);
DROP TABLE IF EXISTS jsrt_cancels;
