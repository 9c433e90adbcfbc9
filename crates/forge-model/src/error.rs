//! The one error type every layer speaks, and its wire body
//! `{"code": ..., "message": ..., "details": {...}}`.

use crate::names::wire_names;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::fmt;

/// Forge's shared error codes; each has one HTTP status.
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
pub enum ErrorCode {
    ValidationError,
    AuthenticationError,
    AuthorizationError,
    NotFound,
    /// The route exists, but not with this HTTP method.
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    /// The request body is not in a format the route accepts (its `Content-Type`).
    UnsupportedMediaType,
    RateLimitExceeded,
    ServiceUnavailable,
    InternalError,
}

impl ErrorCode {
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError => 422,
            ErrorCode::AuthenticationError => 401,
            ErrorCode::AuthorizationError => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::InternalError => 500,
        }
    }
}

wire_names!(ErrorCode, "error code");

/// One violated rule of one field, e.g. `max_memory_mb`: "must be between 1 and 512".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Seconds a client waits before retrying a 503: long enough for a restarted database or object
/// store to come back, short enough that a blip costs little.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An error as Forge reports it: a code, a human message and structured details (a validation
/// error lists each violated rule in `details.errors`; a rate-limited call says in
/// `details.retry_after` how many seconds to wait).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
// In OpenAPI this is the body of every refusal: `ErrorBody`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ErrorBody))]
#[error("{message}")]
pub struct ForgeError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub details: Map<String, Value>,
}

impl ForgeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ForgeError { code, message: message.into(), details: Map::new() }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A validation error listing every violated rule at once (`details.errors`).
    pub fn invalid_fields(what: &str, errors: Vec<FieldError>) -> Self {
        let summary = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        ForgeError::validation(format!("invalid {what}: {summary}")).with_detail("errors", json!(errors))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AuthenticationError, message)
    }
    pub fn authorization(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AuthorizationError, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// A store or dependency is down for now: retry after [`UNAVAILABLE_RETRY_AFTER_SECS`] (also
    /// `details.retry_after`, and `Retry-After` over HTTP).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
            .with_detail("retry_after", UNAVAILABLE_RETRY_AFTER_SECS)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }
    /// Too much in flight: retry after `retry_after_secs` (also `details.retry_after`).
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(ErrorCode::RateLimitExceeded, message).with_detail("retry_after", retry_after_secs)
    }
}

/// `text` cut to `max_chars` characters (with `...` when cut), for quoting input in an error
/// message: a refusal must not grow with what it refuses.
pub fn abbreviated(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_and_statuses() {
        let err = ForgeError::rate_limited("busy", 1);
        let body = serde_json::to_value(&err).unwrap();
        assert_eq!(
            body,
            json!({"code": "rate_limit_exceeded", "message": "busy", "details": {"retry_after": 1}})
        );
        assert_eq!(err.code.http_status(), 429);
        assert_eq!(ErrorCode::ValidationError.http_status(), 422);
        assert_eq!(ErrorCode::AuthenticationError.http_status(), 401);
        assert_eq!(ErrorCode::AuthorizationError.http_status(), 403);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Conflict.http_status(), 409);
        assert_eq!(ErrorCode::ServiceUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::MethodNotAllowed.http_status(), 405);
        assert_eq!(ErrorCode::UnsupportedMediaType.http_status(), 415);
        for code in [ErrorCode::MethodNotAllowed, ErrorCode::UnsupportedMediaType] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn invalid_fields_lists_every_error() {
        let err = ForgeError::invalid_fields(
            "manifest",
            vec![FieldError::new("name", "is empty"), FieldError::new("version", "is not x.y.z")],
        );
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert!(err.message.contains("name: is empty") && err.message.contains("version: is not x.y.z"));
        assert_eq!(err.details["errors"].as_array().unwrap().len(), 2);
    }
}
