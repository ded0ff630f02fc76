-- What a model does: 'chat' (every model before this migration) or 'embedding'. Routing keeps the
-- two apart, and /v1/models lists both.
ALTER TABLE provider_models ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat';
