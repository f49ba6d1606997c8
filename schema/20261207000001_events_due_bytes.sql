-- Each due event's size (its payload's JSON text in bytes), so that a claim fans out no more
-- than a budget of one tenant's payload bytes (jsrt_claim_v4's p_tenant_bytes): a tenant
-- publishing 250 KB payloads (under the 256 KiB cap) made each claim carry 160 of them - 40 MB
-- written into executions and read back - and claims took 200-560 ms, while every other
-- tenant's events waited.

-- +migrate Up
-- +migrate StatementBegin
ALTER TABLE jsrt_events_due ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION jsrt_events_due_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jsrt_events_due (event_id, tenant_id, published_at, bytes)
    SELECT n.id, n.tenant_id, n.published_at, octet_length(n.payload::text)
    FROM jsrt_events_new n WHERE n.dispatched_at IS NULL;
    RETURN NULL;
END
$$;

UPDATE jsrt_events_due q SET bytes = octet_length(e.payload::text)
FROM jsrt_events e WHERE e.id = q.event_id;
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
CREATE OR REPLACE FUNCTION jsrt_events_due_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jsrt_events_due (event_id, tenant_id, published_at)
    SELECT n.id, n.tenant_id, n.published_at FROM jsrt_events_new n WHERE n.dispatched_at IS NULL;
    RETURN NULL;
END
$$;

ALTER TABLE jsrt_events_due DROP COLUMN IF EXISTS bytes;
-- +migrate StatementEnd
