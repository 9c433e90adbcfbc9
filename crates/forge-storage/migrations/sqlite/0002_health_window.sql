-- Health that callers cannot game: failures the caller caused are counted apart, the quarantine rule
-- judges a sliding window of the most recent counted calls, and a release from quarantine starts a
-- probation.

-- Invalid input, or a timeout under a deadline the caller shortened; never held against the overlay.
ALTER TABLE overlays ADD COLUMN caller_failure_count INTEGER NOT NULL DEFAULT 0;
-- The most recent counted calls, oldest first: '+' a success, '-' a failure (RecentCalls).
ALTER TABLE overlays ADD COLUMN recent_calls TEXT NOT NULL DEFAULT '';
-- Released from quarantine and not yet through its first window.
ALTER TABLE overlays ADD COLUMN on_probation INTEGER NOT NULL DEFAULT 0;
