-- Each queued run's input size (its stored size, as it was written), so that a claim reserves a
-- script's queued runs within a budget of bytes (jsrt_claim_v4 steps 1-2) without reading the
-- executions: a replay of 1,000 executions with 250 KB inputs would make claims of 20 MB, and
-- looking each input's size up cost the claim 25 µs per run. 0: unknown (a row written by the
-- previous release), counted as small.

-- +migrate Up
ALTER TABLE jsrt_runs ADD COLUMN input_bytes INTEGER NOT NULL DEFAULT 0;

-- +migrate Down
ALTER TABLE jsrt_runs DROP COLUMN IF EXISTS input_bytes;
