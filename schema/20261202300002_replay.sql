-- Replay (#19): a run may run an earlier source version of its script than the current one
-- (`jsrt executions replay --version original`, `jsrt dead-letters retry --version original`):
-- jsrt_runs.source_version names it (script_versions.version_number; NULL, as for every other
-- run: the script's current source), and a dead letter keeps the version its retries run.

-- +migrate Up
ALTER TABLE jsrt_runs ADD COLUMN source_version INTEGER;
ALTER TABLE jsrt_dead_letter_state ADD COLUMN retry_version INTEGER;
COMMENT ON COLUMN jsrt_runs.source_version IS
    'Source version to run (script_versions.version_number); NULL: the script''s current source';
COMMENT ON COLUMN jsrt_dead_letter_state.retry_version IS
    'Source version the letter''s retries run (dead-letters retry --version original); NULL: current';

-- +migrate Down
ALTER TABLE jsrt_dead_letter_state DROP COLUMN retry_version;
ALTER TABLE jsrt_runs DROP COLUMN source_version;
