-- What overlays logged, kept per overlay within the server's retention (the newest entries). Each row
-- is one batch of entries (a JSON array, oldest first) written behind the invocations, so a busy
-- overlay costs one row per batch, not one per line; whole rows past the retention are deleted.
CREATE TABLE overlay_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    overlay_id TEXT NOT NULL REFERENCES overlays (id) ON DELETE CASCADE,
    entry_count INTEGER NOT NULL,
    byte_count INTEGER NOT NULL,
    entries TEXT NOT NULL
) STRICT;

CREATE INDEX overlay_logs_by_overlay ON overlay_logs (overlay_id, id);
