-- Spend of hourly rollups deleted by retention, per key, so a `total` budget keeps counting it.
CREATE TABLE key_spend_archive (
    key_id      INTEGER PRIMARY KEY,
    cost_micros INTEGER NOT NULL
);
-- Retention deletes the oldest rollups first: by hour.
CREATE INDEX IF NOT EXISTS usage_hourly_bucket ON usage_hourly (bucket);
