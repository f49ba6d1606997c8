-- Rate limits that hold across every process sharing the database (max_api_calls_per_minute,
-- and the per-endpoint limits of HTTP scripts): calls are counted per (script, bucket) in
-- one-minute windows, and a call is allowed while the sliding estimate - this window's count
-- plus the previous window's, weighted by how much of it still overlaps the last minute -
-- stays within the limit. Windows older than that are deleted by the counting statement
-- itself. No foreign keys: a row lives two minutes, and a lookup per counted call would cost
-- more than the row.

-- +migrate Up
CREATE TABLE jsrt_rate_windows (
    script_id UUID NOT NULL,
    bucket TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    tenant_id UUID NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (script_id, bucket, window_start)
);
COMMENT ON TABLE jsrt_rate_windows IS
    'Calls counted per script and bucket in one-minute windows (rate limits across processes)';

-- +migrate Down
DROP TABLE jsrt_rate_windows;
