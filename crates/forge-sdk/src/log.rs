//! Lines for the call's log (`forge.log_info` / `forge.log_error`).
//!
//! The host keeps at most 64 KiB of log per call and counts what it drops, so log what helps
//! someone debug a failed call, not every step. Both functions need no capability. On native
//! targets (tests) the lines go to stderr.
//!
//! ```
//! forge_sdk::log::info("searching capsules");
//! forge_sdk::log::error(&format!("{} capsules were unreadable", 2));
//! ```

/// Appends `line` to the call's log as information.
pub fn info(line: &str) {
    crate::host::log_info(line);
}

/// Appends `line` to the call's log as an error. It does not fail the call: return
/// `Err(forge_sdk::Error)` (or call [`crate::fail`]) for that.
pub fn error(line: &str) {
    crate::host::log_error(line);
}
