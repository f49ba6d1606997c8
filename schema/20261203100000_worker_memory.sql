-- Workers and their memory (#18, the console's overview): each process's heartbeat also
-- records what it holds - its own resident memory and that of each of its sandbox workers -
-- as one JSON document, so that any console (served by any process) shows every process's.
-- NULL until the process's first heartbeat with it (and for processes that have no sandbox
-- of their own to report). {"rss_bytes": N, "workers": [{"index", "pid", "rss_bytes",
-- "inflight"}, ...], "at": ISO time}.

-- +migrate Up
ALTER TABLE jsrt_daemons ADD COLUMN memory JSONB;
COMMENT ON COLUMN jsrt_daemons.memory IS
    'Resident memory of the process and of its sandbox workers at its last heartbeat (console)';

-- +migrate Down
ALTER TABLE jsrt_daemons DROP COLUMN memory;
