//! Invocation requests and their results.

use crate::error::{FieldError, ForgeError};
use crate::logs::LogLine;
use crate::manifest::limits::EXECUTION_MS_RANGE;
use crate::names::wire_names;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A request to run one entry point of an overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OverlayInvocation {
    /// The entry point to call.
    pub function: String,
    /// Passed to the guest as UTF-8 JSON.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(default = json!({})))]
    pub args: Map<String, Value>,
    /// Caps the call's wall-clock time below the manifest's `max_execution_ms` (100..=30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Return the call's log lines in the result (`logs`); only for callers who may read the
    /// overlay's logs (its submitter, admins, operators), 403 for others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_logs: bool,
}

impl OverlayInvocation {
    pub fn new(function: impl Into<String>, args: Map<String, Value>) -> Self {
        OverlayInvocation { function: function.into(), args, timeout_ms: None, include_logs: false }
    }

    pub fn validate(&self) -> Result<(), ForgeError> {
        let mut errors = Vec::new();
        if self.function.is_empty() {
            errors.push(FieldError::new("function", "is required"));
        }
        if let Some(ms) = self.timeout_ms
            && !EXECUTION_MS_RANGE.contains(&ms)
        {
            let (lo, hi) = (EXECUTION_MS_RANGE.start(), EXECUTION_MS_RANGE.end());
            errors.push(FieldError::new("timeout_ms", format!("must be between {lo} and {hi}")));
        }
        if errors.is_empty() { Ok(()) } else { Err(ForgeError::invalid_fields("invocation", errors)) }
    }

    /// Whether the caller asked for a deadline below the manifest's limit (a timeout is then
    /// not held against the overlay).
    pub fn shortens_deadline(&self, max_execution_ms: u32) -> bool {
        self.timeout_ms.is_some_and(|t| t < max_execution_ms)
    }

    /// The call's deadline: the smaller of the invocation's timeout and the manifest's limit.
    pub fn effective_timeout_ms(&self, max_execution_ms: u32) -> u32 {
        self.timeout_ms.map_or(max_execution_ms, |t| t.min(max_execution_ms))
    }

    /// The refusal of a call to a function that is not one of `overlay`'s entry points: 422, with
    /// the ones it has in the message and in `details.available`.
    pub fn unknown_entry_point<'a>(
        &self,
        overlay: &str,
        available: impl IntoIterator<Item = &'a str>,
    ) -> ForgeError {
        let available: Vec<&str> = available.into_iter().collect();
        ForgeError::validation(format!(
            "`{}` is not an entry point of {overlay} (available: {})",
            self.function,
            available.join(", ")
        ))
        .with_detail("available", available)
    }
}

/// Why an invocation failed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// The caller's input was invalid: the arguments did not deserialise, or the guest said so
    /// (`forge.reject_input`). The caller's fault, never held against the overlay's health.
    InvalidInput,
    /// The call used up its `max_fuel`.
    FuelExhausted,
    /// The call ran past its deadline and was stopped.
    Timeout,
    /// The guest tried to grow memory beyond `max_memory_mb`.
    MemoryLimit,
    /// The guest trapped: unreachable, stack overflow, out-of-bounds access, division by zero...
    Trap,
    /// The guest's result broke the ABI: bad pointer, not UTF-8, not JSON, not an object, too large.
    InvalidOutput,
    /// The guest reported a failure (`forge.fail`) or did not honour the ABI's calling contract.
    OverlayError,
    /// The guest called a host function its manifest was not granted.
    CapabilityDenied,
    /// The host failed (storage down, a host function's backend erred); not the overlay's fault.
    HostError,
}

/// Whose fault a failed invocation is: only the overlay's own failures count toward quarantine;
/// the others are counted apart, so that neither the host nor a caller can push an overlay into
/// quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Overlay,
    /// The host failed (storage down, a backend error).
    Host,
    /// The caller: invalid input, or a timeout under a deadline it shortened below the manifest's.
    Caller,
}

impl ErrorKind {
    /// Whom a failure of this kind is held against; `deadline_shortened` says whether the caller
    /// asked for a deadline below the manifest's (then a timeout is the caller's doing).
    pub const fn blame(self, deadline_shortened: bool) -> Blame {
        match self {
            ErrorKind::HostError => Blame::Host,
            ErrorKind::InvalidInput => Blame::Caller,
            ErrorKind::Timeout if deadline_shortened => Blame::Caller,
            _ => Blame::Overlay,
        }
    }
}

wire_names!(ErrorKind, "error kind");

/// Messages fixed by the original Forge design.
pub mod messages {
    pub const FUEL_EXHAUSTED: &str = "CPU limit exceeded (fuel exhausted)";
    pub fn timed_out(ms: u32) -> String {
        format!("Execution timed out after {ms}ms")
    }
}

/// The outcome of one invocation, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OverlayResult {
    pub success: bool,
    /// The guest's JSON object, or null.
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub execution_time_ms: f64,
    /// Fuel actually used by this call, also when it failed.
    pub fuel_consumed: u64,
    /// The call's id (UUIDv7), also in the `X-Forge-Invocation-Id` header and on its log entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<Uuid>,
    /// The lines the call logged, when the invocation asked for them (`include_logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    /// Lines the call wrote past its log budget, not in `logs`; with `logs` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_dropped: Option<u64>,
}

impl OverlayResult {
    /// Whom this result's failure is held against; `None` for a success.
    pub fn blame(&self, deadline_shortened: bool) -> Option<Blame> {
        match self.error_kind {
            Some(kind) => Some(kind.blame(deadline_shortened)),
            None if !self.success => Some(Blame::Overlay),
            None => None,
        }
    }

    pub fn ok(result: Option<Map<String, Value>>, execution_time_ms: f64, fuel_consumed: u64) -> Self {
        OverlayResult {
            success: true,
            result,
            error: None,
            error_kind: None,
            execution_time_ms,
            fuel_consumed,
            invocation_id: None,
            logs: None,
            logs_dropped: None,
        }
    }

    pub fn failed(
        kind: ErrorKind,
        error: impl Into<String>,
        execution_time_ms: f64,
        fuel_consumed: u64,
    ) -> Self {
        OverlayResult {
            success: false,
            result: None,
            error: Some(error.into()),
            error_kind: Some(kind),
            execution_time_ms,
            fuel_consumed,
            invocation_id: None,
            logs: None,
            logs_dropped: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invocation_parses_and_validates() {
        let inv: OverlayInvocation =
            serde_json::from_value(json!({"function": "process", "args": {"a": 1}, "timeout_ms": 250}))
                .unwrap();
        assert!(inv.validate().is_ok());
        assert_eq!(inv.effective_timeout_ms(5000), 250);
        assert_eq!(inv.effective_timeout_ms(200), 200);
        let no_timeout = OverlayInvocation::new("process", Map::new());
        assert_eq!(no_timeout.effective_timeout_ms(5000), 5000);
        assert!(inv.shortens_deadline(5000) && !inv.shortens_deadline(250) && !inv.shortens_deadline(200));
        assert!(!no_timeout.shortens_deadline(5000));

        let bad = OverlayInvocation {
            function: String::new(),
            timeout_ms: Some(99),
            ..OverlayInvocation::new("", Map::new())
        };
        let err = bad.validate().unwrap_err();
        assert!(err.message.contains("function") && err.message.contains("timeout_ms"));
        assert!(serde_json::from_value::<OverlayInvocation>(json!({"function": "f", "args": [1]})).is_err());
        assert!(serde_json::from_value::<OverlayInvocation>(json!({"function": "f", "argz": {}})).is_err());
    }

    #[test]
    fn result_wire_shape() {
        let r = OverlayResult::failed(ErrorKind::FuelExhausted, messages::FUEL_EXHAUSTED, 1.5, 100);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"success": false, "result": null, "error": "CPU limit exceeded (fuel exhausted)",
                   "error_kind": "fuel_exhausted", "execution_time_ms": 1.5, "fuel_consumed": 100})
        );
        assert_eq!(messages::timed_out(250), "Execution timed out after 250ms");
    }

    #[test]
    fn failures_are_blamed_on_whoever_caused_them() {
        let failed = |kind| OverlayResult::failed(kind, "x", 1.0, 1);
        assert_eq!(OverlayResult::ok(None, 1.0, 1).blame(true), None);
        assert_eq!(failed(ErrorKind::Trap).blame(true), Some(Blame::Overlay));
        assert_eq!(failed(ErrorKind::HostError).blame(false), Some(Blame::Host));
        assert_eq!(failed(ErrorKind::InvalidInput).blame(false), Some(Blame::Caller));
        assert_eq!(failed(ErrorKind::Timeout).blame(true), Some(Blame::Caller), "the caller's deadline");
        assert_eq!(failed(ErrorKind::Timeout).blame(false), Some(Blame::Overlay), "the manifest's deadline");
        assert_eq!(failed(ErrorKind::FuelExhausted).blame(true), Some(Blame::Overlay));
        assert_eq!(serde_json::to_value(ErrorKind::InvalidInput).unwrap(), json!("invalid_input"));
    }
}
