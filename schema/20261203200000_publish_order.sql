-- An event's published_at is the moment it was published, not its transaction's start: events
-- published in one transaction (order.created, then order.paid) keep the order of the calls
-- that published them. "Publish order" - a tenant's fan-out and a concurrency key's runs
-- (#19) - is published_at; with NOW() every event of a transaction had the same time, and
-- a key's runs from one transaction ran in the order of their random ids.

-- +migrate Up
ALTER TABLE jsrt_events ALTER COLUMN published_at SET DEFAULT clock_timestamp();

-- +migrate Down
ALTER TABLE jsrt_events ALTER COLUMN published_at SET DEFAULT NOW();
