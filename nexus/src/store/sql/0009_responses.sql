-- Responses kept by `POST /v1/responses` with `store: true`, for `previous_response_id`,
-- `GET /v1/responses/{id}` and its input items. Owned by the key that made them (0: the admin or
-- the library's owner); pruned with the conversation messages (message_retention_days).
CREATE TABLE responses (
    id           TEXT PRIMARY KEY,
    key_id       INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    model        TEXT NOT NULL,
    response     TEXT NOT NULL,   -- the response object as answered (JSON)
    input_items  TEXT NOT NULL,   -- the request's input items (JSON array)
    context      TEXT NOT NULL    -- the conversation as chat messages, this answer included
);
CREATE INDEX responses_created ON responses (created_ms);
CREATE INDEX responses_key ON responses (key_id);
