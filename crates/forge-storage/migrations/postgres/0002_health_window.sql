-- Health that callers cannot game: failures the caller caused are counted apart, the quarantine rule
-- judges a sliding window of the most recent counted calls, and a release from quarantine starts a
-- probation.

ALTER TABLE overlays
    -- Invalid input, or a timeout under a deadline the caller shortened; never held against the overlay.
    ADD COLUMN caller_failure_count BIGINT NOT NULL DEFAULT 0,
    -- The most recent counted calls, oldest first: '+' a success, '-' a failure (RecentCalls).
    ADD COLUMN recent_calls TEXT NOT NULL DEFAULT '',
    -- Released from quarantine and not yet through its first window.
    ADD COLUMN on_probation BOOLEAN NOT NULL DEFAULT FALSE;
