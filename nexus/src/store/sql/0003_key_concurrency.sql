-- An optional cap on a key's requests in flight at once (streams count until they end).
ALTER TABLE client_keys ADD COLUMN max_concurrent INTEGER;

-- A change of the cap must reach other processes like any other key change.
DROP TRIGGER keys_gen_upd;
CREATE TRIGGER keys_gen_upd AFTER UPDATE OF name, key_hash, prefix, provider_ids, models,
    expires_at, enabled, rpm, tpm, max_concurrent ON client_keys
BEGIN UPDATE registry_generation SET n = n + 1 WHERE id = 1; END;
