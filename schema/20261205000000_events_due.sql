-- Due events apart from the event history (#17). jsrt_events keeps every event for
-- JSRT_RETENTION_EVENTS_DAYS; a claim found the due ones through the partial index
-- idx_jsrt_events_pending (WHERE dispatched_at IS NULL). Dispatching an event updates its
-- row, and the index entry of the old version stays until VACUUM removes it - at the front of
-- the tenant's range, where every probe of the claim starts. Measured: 200,000 events
-- dispatched and not yet vacuumed, one probe reads 989 index pages (1 ms; 14 ms the first
-- time), against 2 pages after VACUUM; and autovacuum lets a table get 20% dead before it
-- visits, so on a large history a claim walked hundreds of thousands of dead entries per
-- probe. A VACUUM of jsrt_events every few seconds cannot fix it: its index passes read the
-- whole history, and PostgreSQL skips them when few pages have dead rows.
--
-- jsrt_events_due holds one small row per event that is still due, inserted with the event
-- (trigger below: every way of inserting an event is covered) and deleted by the claim that
-- fans it out. It stays as small as the backlog, and the run queue's own VACUUM
-- (consumer/vacuum.py) keeps its pages and index few. dispatched_at is still written: it is
-- the history's record, and the claim of the previous release (jsrt_claim, triggers.sql)
-- still finds events by it during a rolling deploy; a due row of an event such a claim
-- dispatched is deleted by the next jsrt_claim_v2, which does not dispatch it again.
-- No foreign key to jsrt_events: its check would cost a trigger per event; a due row whose
-- event is gone (its tenant deleted) is deleted by the next claim that meets it.

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_events_due (
    event_id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL,
    published_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_jsrt_events_due ON jsrt_events_due(tenant_id, published_at);

COMMENT ON TABLE jsrt_events_due IS 'Events not yet fanned out (the claim''s way in; jsrt_events keeps the history)';

CREATE FUNCTION jsrt_events_due_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jsrt_events_due (event_id, tenant_id, published_at)
    SELECT n.id, n.tenant_id, n.published_at FROM jsrt_events_new n WHERE n.dispatched_at IS NULL;
    RETURN NULL;
END
$$;

-- Per statement, over the rows it inserted: one trigger call for a bulk publish.
CREATE TRIGGER jsrt_events_due_insert AFTER INSERT ON jsrt_events
    REFERENCING NEW TABLE AS jsrt_events_new
    FOR EACH STATEMENT EXECUTE FUNCTION jsrt_events_due_insert();

INSERT INTO jsrt_events_due (event_id, tenant_id, published_at)
SELECT id, tenant_id, published_at FROM jsrt_events WHERE dispatched_at IS NULL;
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TRIGGER IF EXISTS jsrt_events_due_insert ON jsrt_events;
DROP FUNCTION IF EXISTS jsrt_events_due_insert();
DROP TABLE IF EXISTS jsrt_events_due;
-- +migrate StatementEnd
