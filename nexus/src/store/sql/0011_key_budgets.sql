-- Spending budgets on client keys, in integer micro-dollars like every cost.
ALTER TABLE client_keys ADD COLUMN budget_micros INTEGER;
ALTER TABLE client_keys ADD COLUMN budget_period TEXT;
ALTER TABLE client_keys ADD COLUMN soft_budget_micros INTEGER;

-- A key's spend in a period is read from the hourly rollups (they outlive raw-row retention):
-- by key, then hour.
CREATE INDEX IF NOT EXISTS usage_hourly_key_bucket ON usage_hourly (key_id, bucket);
