-- The request explorer: each request's upstream time and attempts, and indexes so that the
-- newest page of any filter is a short index walk, not a scan.
ALTER TABLE usage ADD COLUMN upstream_ms REAL;
ALTER TABLE usage ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- JSON array of {provider_id, status, error_kind?, ms}, in order.
ALTER TABLE usage ADD COLUMN attempt_log TEXT;

CREATE INDEX IF NOT EXISTS usage_request_id ON usage (request_id);
CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_id, ts_ms);
CREATE INDEX IF NOT EXISTS usage_provider_ts ON usage (provider_id, ts_ms);
CREATE INDEX IF NOT EXISTS usage_model_ts ON usage (model, ts_ms);
-- Failures are few: their own index keeps "errors only" fast on a large table.
CREATE INDEX IF NOT EXISTS usage_errors_ts ON usage (ts_ms) WHERE status >= 400;
