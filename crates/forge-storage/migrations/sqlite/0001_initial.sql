-- Forge storage schema, SQLite flavour. UUIDs are hyphenated text; timestamps are UTC text with six
-- fractional digits (they sort as text); JSON is text. STRICT tables refuse values of the wrong type.

CREATE TABLE overlays (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    -- The whole validated manifest; name and version are copied out for uniqueness and filtering.
    manifest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'quarantined', 'deprecated')),
    -- Forge's numeric trust value (0, 40, 60, 80, 100).
    trust_level INTEGER NOT NULL,
    wasm_key TEXT NOT NULL,
    wasm_hash TEXT NOT NULL,
    source_hash TEXT,
    submitted_by TEXT NOT NULL,
    requires_approval INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- Health counters, only ever incremented in place (x = x + n) or reset.
    invocation_count INTEGER NOT NULL DEFAULT 0,
    failure_count INTEGER NOT NULL DEFAULT 0,
    host_failure_count INTEGER NOT NULL DEFAULT 0,
    total_execution_ms REAL NOT NULL DEFAULT 0,
    last_invoked_at TEXT,
    last_error TEXT,
    -- Latency histogram: one counter per bucket of LatencyHistogram::BOUNDS_MS, the last for slower.
    latency_00 INTEGER NOT NULL DEFAULT 0,
    latency_01 INTEGER NOT NULL DEFAULT 0,
    latency_02 INTEGER NOT NULL DEFAULT 0,
    latency_03 INTEGER NOT NULL DEFAULT 0,
    latency_04 INTEGER NOT NULL DEFAULT 0,
    latency_05 INTEGER NOT NULL DEFAULT 0,
    latency_06 INTEGER NOT NULL DEFAULT 0,
    latency_07 INTEGER NOT NULL DEFAULT 0,
    latency_08 INTEGER NOT NULL DEFAULT 0,
    latency_09 INTEGER NOT NULL DEFAULT 0,
    latency_10 INTEGER NOT NULL DEFAULT 0,
    latency_11 INTEGER NOT NULL DEFAULT 0,
    latency_12 INTEGER NOT NULL DEFAULT 0,
    latency_13 INTEGER NOT NULL DEFAULT 0,
    latency_14 INTEGER NOT NULL DEFAULT 0,
    latency_15 INTEGER NOT NULL DEFAULT 0,
    latency_16 INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name, version)
) STRICT;

CREATE INDEX overlays_by_creation ON overlays (created_at, id);
CREATE INDEX overlays_by_state ON overlays (state);

CREATE TABLE overlay_capabilities (
    overlay_id TEXT NOT NULL REFERENCES overlays (id) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    PRIMARY KEY (overlay_id, capability)
) STRICT;

CREATE INDEX overlay_capabilities_by_capability ON overlay_capabilities (capability);

-- No foreign key to overlays: the trail of a deleted overlay stays.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    overlay_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT,
    details TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_by_overlay ON audit_events (overlay_id, id);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    -- JSON array of role names.
    roles TEXT NOT NULL,
    trust_level INTEGER NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

-- Hashes of API tokens only; a revoked token keeps its row so its hash cannot be reused.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;

CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

CREATE TABLE capsules (
    -- Stable rowid for the full-text index (a table without an INTEGER PRIMARY KEY may renumber its
    -- rowids on VACUUM, which would detach the index from its rows).
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    content TEXT NOT NULL,
    capsule_type TEXT NOT NULL,
    trust_level INTEGER NOT NULL,
    version INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    owner TEXT,
    -- Provenance; no foreign key, a capsule outlives the overlay that wrote it.
    created_by_overlay TEXT,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX capsules_by_trust ON capsules (trust_level);

-- External-content FTS5 index over capsules.content, kept in step by the triggers below.
CREATE VIRTUAL TABLE capsules_fts USING fts5 (
    content,
    content = 'capsules',
    content_rowid = 'seq',
    tokenize = 'porter unicode61'
);

CREATE TRIGGER capsules_fts_insert AFTER INSERT ON capsules BEGIN
    INSERT INTO capsules_fts (rowid, content) VALUES (new.seq, new.content);
END;

CREATE TRIGGER capsules_fts_delete AFTER DELETE ON capsules BEGIN
    INSERT INTO capsules_fts (capsules_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;

CREATE TRIGGER capsules_fts_update AFTER UPDATE OF content ON capsules BEGIN
    INSERT INTO capsules_fts (capsules_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO capsules_fts (rowid, content) VALUES (new.seq, new.content);
END;
