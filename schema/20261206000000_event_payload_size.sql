-- A cap on an event's payload (jsrt.max_payload_bytes, 256 KiB unless the database sets
-- another: ALTER DATABASE … SET jsrt.max_payload_bytes = '1048576'). Without it one tenant's
-- publish of a few 100 MB payloads held the daemon at about 1 GB and the sandbox for minutes
-- (each run parses its input before the memory limit stops it, and is retried), and a claim
-- reads up to hundreds of events at once. On every insert, by any path (jsrt_publish, a
-- script's events.publish, the CLI, the listener's raw events, plain SQL), before the row
-- exists: the publisher's statement fails with one line, and nothing is queued. The size is
-- the payload's JSON text in UTF-8 (as PostgreSQL writes jsonb out: `{"a": 1}`).

-- +migrate Up
-- +migrate StatementBegin
CREATE FUNCTION jsrt_max_payload_bytes() RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('jsrt.max_payload_bytes', true), '')::bigint, 262144)
$$;

CREATE FUNCTION jsrt_events_payload_size() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_limit BIGINT := jsrt_max_payload_bytes();
    v_size BIGINT;
BEGIN
    -- the JSON text, as the claim hands it to the daemon (input::text): whatever the value's
    -- storage (a value copied from another row arrives compressed), in every PostgreSQL
    v_size := octet_length(NEW.payload::text);
    IF v_size > v_limit THEN
        RAISE EXCEPTION 'jsrt_publish: payload is larger than % bytes (% bytes)', v_limit, v_size
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jsrt_events_payload_size BEFORE INSERT ON jsrt_events
    FOR EACH ROW EXECUTE FUNCTION jsrt_events_payload_size();
-- +migrate StatementEnd

-- +migrate Down
-- +migrate StatementBegin
DROP TRIGGER IF EXISTS jsrt_events_payload_size ON jsrt_events;
DROP FUNCTION IF EXISTS jsrt_events_payload_size();
DROP FUNCTION IF EXISTS jsrt_max_payload_bytes();
-- +migrate StatementEnd
