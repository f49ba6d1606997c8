-- Retry bookkeeping beside script_event_dead_letters (which stays exactly as the seed gives it):
-- when the next retry is due, whether one is in flight, how the letter was resolved, and the
-- script version and resource limits in effect at the failure, so it can be reproduced.

-- +migrate Up
-- +migrate StatementBegin
CREATE TABLE jsrt_dead_letter_state (
    dead_letter_id UUID PRIMARY KEY REFERENCES script_event_dead_letters(id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_id UUID,
    script_version INTEGER,
    resource_limits JSONB,
    next_retry_at TIMESTAMPTZ,
    in_flight BOOLEAN NOT NULL DEFAULT false,
    resolved_at TIMESTAMPTZ,
    resolution VARCHAR(50) CHECK (resolution IN ('succeeded', 'discarded')),
    CONSTRAINT jsrt_dead_letter_state_resolved CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);

CREATE INDEX idx_jsrt_dead_letter_state_due ON jsrt_dead_letter_state(next_retry_at)
    WHERE resolved_at IS NULL AND in_flight = false;
CREATE INDEX idx_jsrt_dead_letter_state_tenant ON jsrt_dead_letter_state(tenant_id);

COMMENT ON TABLE jsrt_dead_letter_state IS 'Retry schedule and resolution of each dead letter';
COMMENT ON COLUMN jsrt_dead_letter_state.resolution IS 'succeeded (a retry completed) or discarded (by an operator); NULL while unresolved';
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TABLE IF EXISTS jsrt_dead_letter_state;
-- +migrate StatementEnd
