-- The migrator's own bookkeeping. gorp_migrations has exactly the columns the Go sql-migrate
-- tool uses, so both tools agree on what is applied.

-- name: migrate_bookkeeping
CREATE TABLE IF NOT EXISTS gorp_migrations (id TEXT PRIMARY KEY, applied_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS jsrt_schema_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- name: migrate_lock
-- Serialises concurrent `jsrt migrate` runs on one database ($1: a constant key).
SELECT pg_advisory_lock($1);

-- name: migrate_unlock
SELECT pg_advisory_unlock($1);

-- name: migrate_applied
SELECT id, applied_at FROM gorp_migrations;

-- name: migrate_record
INSERT INTO gorp_migrations (id, applied_at) VALUES ($1, now());

-- name: migrate_forget
DELETE FROM gorp_migrations WHERE id = $1;

-- name: triggers_digest
SELECT value FROM jsrt_schema_state WHERE key = 'triggers_sha256';

-- name: triggers_digest_save
INSERT INTO jsrt_schema_state (key, value) VALUES ('triggers_sha256', $1)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;

-- name: triggers_digest_clear
-- After a down: the triggers may have gone with the tables, so the next up re-applies them.
DELETE FROM jsrt_schema_state WHERE key = 'triggers_sha256';
