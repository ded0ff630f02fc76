-- Active health checks: a provider the probes disabled is marked so (an operator's disable is
-- never undone by them), with the reason; every state change is an event.
ALTER TABLE service_providers ADD COLUMN auto_disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE service_providers ADD COLUMN disabled_reason TEXT;

CREATE TABLE provider_events (
    id            INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    provider_id   INTEGER NOT NULL,
    provider_name TEXT NOT NULL,
    event         TEXT NOT NULL,   -- auto_disabled, auto_enabled, disabled, enabled
    reason        TEXT NOT NULL
);
CREATE INDEX provider_events_provider ON provider_events (provider_id, id);
