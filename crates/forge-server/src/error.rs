//! The one error type of the API, and the one place where errors become responses.
//!
//! Everything that refuses a request ends here: the service's [`ForgeError`]s, the extractors'
//! rejections (broken JSON, wrong content type, oversized body, malformed path or query) and the
//! router's own 404 and 405. So every refusal has the standard body `{"code", "message", "details"}`
//! with the status its code stands for.

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use forge_model::{ErrorCode, ForgeError, UNAVAILABLE_RETRY_AFTER_SECS};

/// A refused request.
#[derive(Debug)]
pub struct ApiError(pub ForgeError);

impl From<ForgeError> for ApiError {
    fn from(error: ForgeError) -> Self {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let status =
            StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if error.code == ErrorCode::InternalError {
            tracing::error!(message = %error.message, "internal error");
        }
        // "Not now" answers say when to ask again; a 503 built without a wait gets the default one.
        let retry_after = match error.code {
            ErrorCode::RateLimitExceeded => error.details.get("retry_after").and_then(|v| v.as_u64()),
            ErrorCode::ServiceUnavailable => Some(
                error
                    .details
                    .get("retry_after")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(UNAVAILABLE_RETRY_AFTER_SECS),
            ),
            _ => None,
        };
        let challenge = error.code == ErrorCode::AuthenticationError;
        let mut response = (status, Json(error)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// An extractor's rejection, by the status axum gives it: the body was too large (413) or in the
/// wrong format (415); anything else about the request's content is a validation error (422).
fn rejected(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        status if status.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::ValidationError,
    };
    ApiError(ForgeError::new(code, message))
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        rejected(rejection.status(), rejection.body_text())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(rejection: MultipartRejection) -> Self {
        rejected(rejection.status(), rejection.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(error: MultipartError) -> Self {
        rejected(error.status(), error.body_text())
    }
}

/// A path that does not parse (an id that is no UUID, an unknown lifecycle action) names no
/// resource: 404, like an unknown route.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError(ForgeError::not_found(rejection.body_text()))
    }
}

/// The router's answer to a path it does not know.
pub async fn unknown_route() -> ApiError {
    ApiError(ForgeError::not_found("no such route; the API is described at /api/v1/openapi.json"))
}

/// The router's answer to a known path with another method (axum adds the `Allow` header).
pub async fn wrong_method() -> ApiError {
    ApiError(ForgeError::new(ErrorCode::MethodNotAllowed, "this route does not take that HTTP method"))
}
