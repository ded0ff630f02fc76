-- Providers speak a wire format (`kind`): every existing provider is OpenAI-compatible.
ALTER TABLE service_providers ADD COLUMN kind TEXT NOT NULL DEFAULT 'openai';
-- The completion budget sent when a request names none (Anthropic requires one).
ALTER TABLE provider_models ADD COLUMN default_max_tokens INTEGER;
