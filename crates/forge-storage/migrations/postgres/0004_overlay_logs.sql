-- What overlays logged, kept per overlay within the server's retention (the newest entries). Each row
-- is one batch of entries (a JSON array, oldest first) written behind the invocations, so a busy
-- overlay costs one row per batch, not one per line; whole rows past the retention are deleted.
CREATE TABLE overlay_logs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    overlay_id UUID NOT NULL REFERENCES overlays (id) ON DELETE CASCADE,
    entry_count BIGINT NOT NULL,
    byte_count BIGINT NOT NULL,
    entries TEXT NOT NULL
);

CREATE INDEX overlay_logs_by_overlay ON overlay_logs (overlay_id, id);
