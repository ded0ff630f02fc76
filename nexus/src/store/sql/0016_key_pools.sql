-- Key pools: a provider may hold several upstream keys. The provider's own key (server_key) is
-- the pool's first member; its weight and state live on the provider row, the others' here.
-- A key set aside after a 401/403 stays aside (set_aside holds why) until an operator enables it.
ALTER TABLE service_providers ADD COLUMN key_weight INTEGER NOT NULL DEFAULT 1;
ALTER TABLE service_providers ADD COLUMN key_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE service_providers ADD COLUMN key_set_aside TEXT;

CREATE TABLE provider_keys (
    id          INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES service_providers(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    sealed_key  BLOB NOT NULL,
    key_hint    TEXT NOT NULL,
    weight      INTEGER NOT NULL DEFAULT 1,
    enabled     INTEGER NOT NULL DEFAULT 1,
    set_aside   TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX provider_keys_provider ON provider_keys (provider_id, id);
