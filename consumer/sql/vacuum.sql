-- The run queue's own vacuum (consumer/vacuum.py).

-- name: vacuum_queue
-- The run path's hot small tables: skipped when another process is at them, never truncated
-- (no ACCESS EXCLUSIVE lock). Not in a transaction: VACUUM cannot be.
VACUUM (SKIP_LOCKED, TRUNCATE false) jsrt_runs, jsrt_leases, jsrt_events_due;
