//! What a request may cost before a handler runs: a body limit per route, checked against the
//! declared length before anything is read and enforced while streaming otherwise, and a budget of
//! body bytes being received at once over all requests.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use axum::Extension;
use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{CONNECTION, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use forge_model::{ErrorCode, ForgeError, NewCapsule};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Room around a route's payload for the rest of its JSON (function name, field names, a timeout).
const ENVELOPE_BYTES: usize = 64 << 10;

/// The largest body of a request that carries no payload of its own (lifecycle reasons, new users).
pub const SMALL_BODY_BYTES: usize = ENVELOPE_BYTES;

/// The largest registration body by default: a module at its cap, base64-encoded, and an envelope
/// for the manifest.
pub fn registration_body_bytes(max_module_bytes: usize) -> usize {
    max_module_bytes.div_ceil(3) * 4 + ENVELOPE_BYTES
}

/// The largest invocation body: the runtime's input cap and an envelope.
pub fn invocation_body_bytes(max_input_bytes: usize) -> usize {
    max_input_bytes + ENVELOPE_BYTES
}

/// The largest capsule body: content and metadata at their caps, allowing for JSON escaping to
/// double them, and an envelope.
pub const CAPSULE_BODY_BYTES: usize =
    2 * (NewCapsule::MAX_CONTENT_BYTES + NewCapsule::MAX_METADATA_BYTES) + ENVELOPE_BYTES;

/// An oversized body from an authenticated caller is read and dropped up to this size before the
/// 413, so that the client sees the answer instead of a reset connection; larger ones, and any from
/// a caller without a valid token, are cut off at once.
const DRAIN_LIMIT: u64 = 64 << 20;

/// How long a request waits for room in the body budget before a 429.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

/// Body bytes being received at once, over all requests, counted in KiB, and how long a body may
/// take to arrive whole.
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    read_timeout: Duration,
}

impl BodyBudget {
    pub fn new(total_bytes: usize, read_timeout: Duration) -> Self {
        let total_kib = u32::try_from(total_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        BodyBudget { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib, read_timeout }
    }

    /// Room for `bytes`, waiting up to [`BUDGET_WAIT`]; 429 if none came.
    async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ForgeError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).min(self.total_kib);
        match tokio::time::timeout(BUDGET_WAIT, self.kib.clone().acquire_many_owned(kib)).await {
            Ok(permit) => Ok(permit.expect("the budget is never closed")),
            Err(_) => Err(ForgeError::rate_limited(
                "the server is receiving too many request bodies at once; retry later",
                1,
            )),
        }
    }
}

/// The body limit of a group of routes: its size, and the name a refusal gives it
/// (`details.limit`, as the module cap's refusal names `max_module_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max_bytes: usize,
    pub name: &'static str,
}

/// Middleware of a group of routes whose bodies may be at most `limit.max_bytes` (the group also
/// carries `DefaultBodyLimit::max`, which cuts off a longer body while it streams): refuses a longer
/// declared body before reading it, and holds room in the body budget while the request runs.
pub async fn bound_body(
    State(limit): State<BodyLimit>,
    Extension(app): Extension<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let hint = request.body().size_hint();
    let max_bytes = limit.max_bytes as u64;
    if hint.lower() > max_bytes {
        return refuse_oversized(app, request, hint.lower(), limit).await;
    }
    let expected = hint.upper().unwrap_or(max_bytes).min(max_bytes);
    if expected == 0 {
        return next.run(request).await;
    }
    let _room = match app.bodies.reserve(expected).await {
        Ok(room) => room,
        Err(refusal) => return ApiError(refusal).into_response(),
    };
    // Room in the budget is held until the request ends: a client trickling its body would hold it
    // for ever without a deadline.
    let deadline = tokio::time::sleep(app.bodies.read_timeout);
    next.run(request.map(|body| Body::new(WithDeadline { body, deadline }))).await
}

pin_project_lite::pin_project! {
    /// A request body that fails once its deadline passes before it has all arrived.
    struct WithDeadline {
        #[pin]
        body: Body,
        #[pin]
        deadline: tokio::time::Sleep,
    }
}

impl HttpBody for WithDeadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(axum::Error::new("the request body did not arrive in time"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// 413 for a body declared longer than its route takes. A caller without a valid token gets its
/// 401 at once and the connection is closed: nobody makes the server read a huge body for nothing.
async fn refuse_oversized(app: Arc<AppState>, request: Request, length: u64, limit: BodyLimit) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = Caller::from_request_parts(&mut parts, &app).await.map(drop);
    let drained = caller.is_ok() && length <= DRAIN_LIMIT;
    if drained {
        let mut body = body;
        while let Some(Ok(_)) = body.frame().await {}
    }
    let mut response = match caller {
        Err(refusal) => refusal.into_response(),
        Ok(()) => {
            let message = format!(
                "request body of {length} bytes exceeds this route's limit of {} bytes ({})",
                limit.max_bytes, limit.name
            );
            let refusal = ForgeError::new(ErrorCode::PayloadTooLarge, message)
                .with_detail("limit", limit.name)
                .with_detail("max_bytes", limit.max_bytes);
            ApiError(refusal).into_response()
        }
    };
    if !drained {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
