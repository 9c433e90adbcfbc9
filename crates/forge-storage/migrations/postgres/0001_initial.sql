-- Forge storage schema, PostgreSQL flavour: native uuid, timestamptz and jsonb.

CREATE TABLE overlays (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    -- The whole validated manifest; name and version are copied out for uniqueness and filtering.
    manifest JSONB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'quarantined', 'deprecated')),
    -- Forge's numeric trust value (0, 40, 60, 80, 100).
    trust_level BIGINT NOT NULL,
    wasm_key TEXT NOT NULL,
    wasm_hash TEXT NOT NULL,
    source_hash TEXT,
    submitted_by TEXT NOT NULL,
    requires_approval BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    -- Health counters, only ever incremented in place (x = x + n) or reset.
    invocation_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    host_failure_count BIGINT NOT NULL DEFAULT 0,
    total_execution_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_invoked_at TIMESTAMPTZ,
    last_error TEXT,
    -- Latency histogram: one counter per bucket of LatencyHistogram::BOUNDS_MS, the last for slower.
    latency_00 BIGINT NOT NULL DEFAULT 0,
    latency_01 BIGINT NOT NULL DEFAULT 0,
    latency_02 BIGINT NOT NULL DEFAULT 0,
    latency_03 BIGINT NOT NULL DEFAULT 0,
    latency_04 BIGINT NOT NULL DEFAULT 0,
    latency_05 BIGINT NOT NULL DEFAULT 0,
    latency_06 BIGINT NOT NULL DEFAULT 0,
    latency_07 BIGINT NOT NULL DEFAULT 0,
    latency_08 BIGINT NOT NULL DEFAULT 0,
    latency_09 BIGINT NOT NULL DEFAULT 0,
    latency_10 BIGINT NOT NULL DEFAULT 0,
    latency_11 BIGINT NOT NULL DEFAULT 0,
    latency_12 BIGINT NOT NULL DEFAULT 0,
    latency_13 BIGINT NOT NULL DEFAULT 0,
    latency_14 BIGINT NOT NULL DEFAULT 0,
    latency_15 BIGINT NOT NULL DEFAULT 0,
    latency_16 BIGINT NOT NULL DEFAULT 0,
    UNIQUE (name, version)
);

CREATE INDEX overlays_by_creation ON overlays (created_at, id);
CREATE INDEX overlays_by_state ON overlays (state);

CREATE TABLE overlay_capabilities (
    overlay_id UUID NOT NULL REFERENCES overlays (id) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    PRIMARY KEY (overlay_id, capability)
);

CREATE INDEX overlay_capabilities_by_capability ON overlay_capabilities (capability);

-- No foreign key to overlays: the trail of a deleted overlay stays.
CREATE TABLE audit_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    overlay_id UUID NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT,
    details JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX audit_events_by_overlay ON audit_events (overlay_id, id);

CREATE TABLE users (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- JSON array of role names.
    roles JSONB NOT NULL,
    trust_level BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Hashes of API tokens only; a revoked token keeps its row so its hash cannot be reused.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- The search vector of a capsule. A tsvector holds at most 1 MB, which a capsule of 1 MiB of short,
-- distinct words can exceed; such a capsule is indexed by its first 50,000 characters (at most
-- 200 KB of text, whose vector stays below the limit at 5 vector bytes per text byte), rather than
-- refused.
CREATE FUNCTION capsule_search_vector(content TEXT) RETURNS TSVECTOR
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN to_tsvector('english', content);
EXCEPTION WHEN program_limit_exceeded THEN
    RETURN to_tsvector('english', left(content, 50000));
END
$$;

CREATE TABLE capsules (
    id UUID PRIMARY KEY,
    content TEXT NOT NULL,
    capsule_type TEXT NOT NULL,
    trust_level BIGINT NOT NULL,
    version BIGINT NOT NULL,
    metadata JSONB NOT NULL,
    owner TEXT,
    -- Provenance; no foreign key, a capsule outlives the overlay that wrote it.
    created_by_overlay UUID,
    created_at TIMESTAMPTZ NOT NULL,
    -- English stemming, like the porter tokenizer of the SQLite index.
    search TSVECTOR GENERATED ALWAYS AS (capsule_search_vector(content)) STORED
);

CREATE INDEX capsules_by_trust ON capsules (trust_level);
CREATE INDEX capsules_search ON capsules USING GIN (search);
