-- The web console (#18): a new API key between the POST that made it and the one GET that
-- shows it (post/redirect/get). Held in the database, not in the process that made it, so
-- that the GET may land on any console process (a load balancer need not be sticky). It is
-- sealed with a key derived from the session's cookie, which only the browser holds (the
-- table keeps the cookie's hash): a copy of the row reveals nothing. The one GET of that
-- session takes it (deletes it) within a minute; ending the session removes it.

-- +migrate Up
CREATE TABLE jsrt_console_reveals (
    ticket_hash BYTEA PRIMARY KEY,
    session_hash BYTEA NOT NULL REFERENCES jsrt_console_sessions(id_hash) ON DELETE CASCADE,
    sealed BYTEA NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX jsrt_console_reveals_session ON jsrt_console_reveals (session_hash);
CREATE INDEX jsrt_console_reveals_expires ON jsrt_console_reveals (expires_at);
COMMENT ON TABLE jsrt_console_reveals IS
    'A console-made API key until its one showing, sealed under the session cookie';

-- +migrate Down
DROP TABLE jsrt_console_reveals;
