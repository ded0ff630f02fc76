-- Recorded request and answer bodies (secrets redacted), per the hub's record_bodies setting or
-- the key's own; pruned by message_retention_days and first to go under max_db_mb.
ALTER TABLE client_keys ADD COLUMN record_bodies TEXT;

CREATE TABLE request_bodies (
    request_id TEXT PRIMARY KEY,
    ts_ms      INTEGER NOT NULL,
    request    TEXT,
    response   TEXT
);
CREATE INDEX request_bodies_ts ON request_bodies (ts_ms);
