-- The request explorer's most common combined filter (one key's requests to one model) as an
-- index walk: without it the planner walks the key's index over the whole range and reads each
-- row to test its model (442 ms on 10M rows when nothing matches).
CREATE INDEX IF NOT EXISTS usage_key_model_ts ON usage (key_id, model, ts_ms);
