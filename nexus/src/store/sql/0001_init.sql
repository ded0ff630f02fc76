-- Registry: the original's service_providers / provider_models, with real ids, encrypted upstream
-- keys and hashed client keys.
CREATE TABLE service_providers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    server_url    TEXT NOT NULL,
    server_key    BLOB NOT NULL,          -- AES-256-GCM sealed, never plaintext
    key_hint      TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    enabled       INTEGER NOT NULL DEFAULT 1,
    options       TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE provider_models (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id   INTEGER NOT NULL REFERENCES service_providers(id) ON DELETE CASCADE,
    model_name    TEXT NOT NULL,
    upstream_name TEXT,
    description   TEXT NOT NULL DEFAULT '',
    input_price   REAL,
    output_price  REAL,
    created_at    INTEGER NOT NULL,
    UNIQUE (provider_id, model_name)
);
CREATE INDEX provider_models_name ON provider_models(model_name);

CREATE TABLE client_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,   -- SHA-256 hex of the key
    prefix        TEXT NOT NULL,
    provider_ids  TEXT NOT NULL DEFAULT '[]',
    models        TEXT NOT NULL DEFAULT '[]',
    expires_at    INTEGER,
    enabled       INTEGER NOT NULL DEFAULT 1,
    rpm           INTEGER,
    tpm           INTEGER,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Usage: one row per request, plus rollups that keep dashboard queries fast on millions of rows.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    ts_ms             INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    conversation_id   TEXT,
    key_id            INTEGER,
    provider_id       INTEGER,
    model             TEXT NOT NULL,
    upstream_model    TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usage_source      TEXT NOT NULL,
    status            INTEGER NOT NULL,
    error_kind        TEXT,
    latency_ms        REAL NOT NULL,
    ttft_ms           REAL,
    stream            INTEGER NOT NULL,
    source            TEXT NOT NULL,
    cost              REAL
);
CREATE INDEX usage_ts ON usage(ts_ms);
CREATE INDEX usage_conversation ON usage(conversation_id) WHERE conversation_id IS NOT NULL;

CREATE TABLE usage_hourly (
    bucket            INTEGER NOT NULL,   -- unix hour (ts_ms / 3600000)
    provider_id       INTEGER NOT NULL,   -- 0 when no provider was chosen
    model             TEXT NOT NULL,
    key_id            INTEGER NOT NULL,   -- 0 for admin / library use
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    ttft_ms_sum       REAL NOT NULL,
    ttft_count        INTEGER NOT NULL,
    cost              REAL NOT NULL,
    PRIMARY KEY (bucket, provider_id, model, key_id)
) WITHOUT ROWID;

CREATE TABLE conversations (
    id                TEXT PRIMARY KEY,
    first_ms          INTEGER NOT NULL,
    last_ms           INTEGER NOT NULL,
    rounds            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE stats_totals (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    conversations INTEGER NOT NULL
);
INSERT INTO stats_totals (id, conversations) VALUES (1, 0);

CREATE TABLE chat_messages (
    id              INTEGER PRIMARY KEY,
    ts_ms           INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    provider_id     INTEGER,
    model_name      TEXT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    tokens_count    INTEGER NOT NULL
);
CREATE INDEX chat_messages_conversation ON chat_messages(conversation_id, id);

-- The original's chat_stats shape, two rows per request (prompt, then completion).
CREATE VIEW chat_stats AS
    SELECT id * 2 AS id, ts_ms AS timestamp, conversation_id, provider_id, model AS model_name,
           prompt_tokens AS tokens_count, 1 AS is_prompt FROM usage
    UNION ALL
    SELECT id * 2 + 1, ts_ms, conversation_id, provider_id, model, completion_tokens, 0 FROM usage;

-- Conversation sessions kept for application developers.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    model      TEXT NOT NULL,
    settings   TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE session_messages (
    id           INTEGER PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX session_messages_session ON session_messages(session_id, id);
