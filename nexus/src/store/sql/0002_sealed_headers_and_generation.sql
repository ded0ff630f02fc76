-- Provider headers often carry secrets (`api-key`, `x-goog-api-key`): they move out of the
-- plaintext `options` JSON into a column sealed like `server_key`. The registry seals the values
-- of rows written before this migration when it opens (SQL cannot: it has no master key).
ALTER TABLE service_providers ADD COLUMN sealed_headers BLOB;

-- A counter bumped by every change to the registry tables, by any process sharing the file:
-- registries poll it (behind PRAGMA data_version) and reload their snapshot when it moves.
-- Stats writes do not touch it, so a busy gateway does not reload its registry all the time.
CREATE TABLE registry_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO registry_generation (id, n) VALUES (1, 0);

CREATE TRIGGER providers_gen_ins AFTER INSERT ON service_providers
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER providers_gen_upd AFTER UPDATE ON service_providers
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER providers_gen_del AFTER DELETE ON service_providers
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER models_gen_ins AFTER INSERT ON provider_models
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER models_gen_upd AFTER UPDATE ON provider_models
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER models_gen_del AFTER DELETE ON provider_models
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER keys_gen_ins AFTER INSERT ON client_keys
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
-- Not on last_used_at alone: that changes on every use and needs no reload.
CREATE TRIGGER keys_gen_upd AFTER UPDATE OF name, key_hash, prefix, provider_ids, models,
    expires_at, enabled, rpm, tpm ON client_keys
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER keys_gen_del AFTER DELETE ON client_keys
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;

CREATE TRIGGER meta_gen_ins AFTER INSERT ON meta
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER meta_gen_upd AFTER UPDATE ON meta
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER meta_gen_del AFTER DELETE ON meta
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;

-- Retention prunes by age.
CREATE INDEX chat_messages_ts ON chat_messages(ts_ms);
