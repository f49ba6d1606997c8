-- Slot leases (#17): a daemon holds some of a script's max_concurrent_runs slots for a while
-- and runs that script's queued executions through them back to back, without a database
-- round trip between two runs.
--   jsrt_leases      the slots each daemon holds, by script: they count against the script's
--                    max_concurrent_runs exactly as running runs do (jsrt_free_slots)
--   jsrt_runs.state  'reserved': queued for the daemon that holds the script's slots (its
--                    local queue); the execution stays 'pending' until the run really starts

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_leases (
    script_id UUID NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
    daemon_id TEXT NOT NULL REFERENCES jsrt_daemons(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL,
    slots INTEGER NOT NULL CHECK (slots > 0),
    granted_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (script_id, daemon_id)
);

CREATE INDEX idx_jsrt_leases_daemon ON jsrt_leases(daemon_id);

COMMENT ON TABLE jsrt_leases IS 'Slots of a script held by a daemon: they count against max_concurrent_runs like running runs';

ALTER TABLE jsrt_runs DROP CONSTRAINT jsrt_runs_state_check;
ALTER TABLE jsrt_runs ADD CONSTRAINT jsrt_runs_state_check
    CHECK (state IN ('pending', 'reserved', 'running'));
-- (jsrt_runs_running_owner already requires a daemon for every state but 'pending')

-- A dead daemon's local queue goes back to 'pending' by daemon: the rescue's only scan of it.
CREATE INDEX idx_jsrt_runs_reserved ON jsrt_runs(daemon_id) WHERE state = 'reserved';
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP INDEX IF EXISTS idx_jsrt_runs_reserved;
UPDATE jsrt_runs SET state = 'pending', daemon_id = NULL, started_at = NULL WHERE state = 'reserved';
ALTER TABLE jsrt_runs DROP CONSTRAINT jsrt_runs_state_check;
ALTER TABLE jsrt_runs ADD CONSTRAINT jsrt_runs_state_check CHECK (state IN ('pending', 'running'));
DROP TABLE IF EXISTS jsrt_leases;
-- +migrate StatementEnd
