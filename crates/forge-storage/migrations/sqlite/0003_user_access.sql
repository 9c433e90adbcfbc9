-- Disabling users, and telling the token installed from FORGE_ADMIN_TOKEN apart from the others.

-- Set while the user is disabled: none of its tokens authenticates.
ALTER TABLE users ADD COLUMN disabled_at TEXT;

-- 1 for the token installed from FORGE_ADMIN_TOKEN; a different one at start revokes it. Tokens
-- installed before this column existed are marked at the first start that is given them again.
ALTER TABLE api_tokens ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
