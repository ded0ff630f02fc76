-- Cache prices on models, and cost in integer micro-dollars (no float drift in sums).
ALTER TABLE provider_models ADD COLUMN cached_input_price REAL;
ALTER TABLE provider_models ADD COLUMN cache_write_price REAL;

-- NULL: the request was not priced (its model had no known price), never $0.
ALTER TABLE usage ADD COLUMN cost_micros INTEGER;
UPDATE usage SET cost_micros = CAST(round(cost * 1000000) AS INTEGER) WHERE cost IS NOT NULL;

ALTER TABLE usage_hourly ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
-- Answered requests recorded with no cost.
ALTER TABLE usage_hourly ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
UPDATE usage_hourly SET cost_micros = CAST(round(cost * 1000000) AS INTEGER);
