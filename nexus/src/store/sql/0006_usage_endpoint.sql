-- The API each request came in through (chat, messages, responses, embeddings), so the stats
-- can be grouped by it. Rows written before this migration were all chat completions.
ALTER TABLE usage ADD COLUMN endpoint TEXT NOT NULL DEFAULT 'chat';

-- The hourly rollup gains the endpoint in its key: rebuilt, since SQLite cannot change a primary
-- key in place. Existing rows are chat.
CREATE TABLE usage_hourly_v6 (
    bucket            INTEGER NOT NULL,
    provider_id       INTEGER NOT NULL,
    model             TEXT NOT NULL,
    key_id            INTEGER NOT NULL,
    endpoint          TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    ttft_ms_sum       REAL NOT NULL,
    ttft_count        INTEGER NOT NULL,
    cost              REAL NOT NULL,
    PRIMARY KEY (bucket, provider_id, model, key_id, endpoint)
) WITHOUT ROWID;
INSERT INTO usage_hourly_v6
    SELECT bucket, provider_id, model, key_id, 'chat', requests, errors, prompt_tokens,
           completion_tokens, latency_ms_sum, ttft_ms_sum, ttft_count, cost
    FROM usage_hourly;
DROP TABLE usage_hourly;
ALTER TABLE usage_hourly_v6 RENAME TO usage_hourly;
