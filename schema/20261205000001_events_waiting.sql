-- The events still due, as every reader but the claim sees them (#17): through
-- jsrt_events_due, whose index holds only them (20261205000000_events_due.sql), each row its
-- event's own, by primary key. A due row whose event a claim of the previous release has
-- dispatched meanwhile, or whose event is gone, is not counted. One definition for the drain
-- check, the metrics and the console overview.

-- +migrate Up
-- +migrate StatementBegin
CREATE VIEW jsrt_events_waiting AS
SELECT e.*
FROM jsrt_events_due q
-- IS TRUE: the events by primary key only; the partial index on dispatched_at IS NULL must
-- never look like a way in (it is what the due table avoids)
JOIN jsrt_events e ON e.id = q.event_id AND (e.dispatched_at IS NULL) IS TRUE;

COMMENT ON VIEW jsrt_events_waiting IS 'Events not yet fanned out (through jsrt_events_due)';
-- +migrate StatementEnd

-- +migrate Down
DROP VIEW IF EXISTS jsrt_events_waiting;
