//! `/api/v1/overlays`: registry, lifecycle, trust, invocation, health and audit trail.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller, OptionalJson, RegisterBody};
use crate::wire::RegisterMultipart;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue};
use axum::response::AppendHeaders;
use forge_model::api::{
    Data, DeleteQuery, INVOCATION_ID_HEADER, List, ListQuery, LogsQuery, PageQuery, ReasonBody, RegisterJson,
    TrustLevelBody,
};
use forge_model::{
    AuditEvent, ForgeError, HealthReport, LifecycleAction, LogEntry, LogQuery, Overlay, OverlayInvocation,
    OverlayResult,
};
use std::sync::Arc;
use uuid::Uuid;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

fn ok<T>(data: T) -> Answer<Data<T>> {
    Ok((StatusCode::OK, Json(Data::new(data))))
}

/// Register an overlay: manifest and module, checked against the ABI before anything is stored.
///
/// The overlay starts `pending` at `sandbox` trust; an admin activates it. Privileged capabilities
/// set `requires_approval`.
#[utoipa::path(post, path = "/overlays", tag = "overlays",
    request_body(content(
        (RegisterJson = "application/json"),
        (RegisterMultipart = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Registered", body = Data<Overlay>),
        (status = 409, description = "name@version is already registered", body = ForgeError),
        (status = 413, description = "Body larger than `max_body_bytes`, or module larger than `max_module_bytes` (`details.limit` names it)", body = ForgeError),
        (status = 415, description = "Neither JSON nor multipart", body = ForgeError),
        (status = 422, description = "Invalid manifest or module (`details.errors` lists each problem)", body = ForgeError),
        (status = 429, description = "The caller's registrations per minute are used up, or no compiler turn came in time; retry after `Retry-After` seconds", body = ForgeError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn register(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    RegisterBody(registration): RegisterBody,
) -> Answer<Data<Overlay>> {
    let overlay = app.service.register(&caller, registration).await?;
    Ok((StatusCode::CREATED, Json(Data::new(overlay))))
}

/// List overlays, filtered and paged.
#[utoipa::path(get, path = "/overlays", tag = "overlays", params(ListQuery),
    responses(
        (status = 200, description = "A page of overlays", body = List<Overlay>),
        (status = 422, description = "A filter does not parse", body = ForgeError),
    ))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Answer<List<Overlay>> {
    let (filter, page) = query.into_parts();
    let page = app.service.list(&caller, &filter, page).await?;
    Ok((StatusCode::OK, Json(List::from(page))))
}

/// One overlay.
#[utoipa::path(get, path = "/overlays/{id}", tag = "overlays", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The overlay", body = Data<Overlay>),
        (status = 404, description = "No such overlay", body = ForgeError),
    ))]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer<Data<Overlay>> {
    ok(app.service.get(&caller, id).await?)
}

/// One overlay by name and version.
#[utoipa::path(get, path = "/overlays/by-name/{name}/{version}", tag = "overlays",
    params(("name" = String, Path), ("version" = String, Path)),
    responses(
        (status = 200, description = "The overlay", body = Data<Overlay>),
        (status = 404, description = "No such overlay", body = ForgeError),
    ))]
pub async fn get_by_name_version(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Answer<Data<Overlay>> {
    ok(app.service.get_by_name_version(&caller, &name, &version).await?)
}

/// Delete an overlay and its binary (admin); its audit trail stays.
#[utoipa::path(delete, path = "/overlays/{id}", tag = "overlays", params(("id" = Uuid, Path), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ForgeError),
        (status = 404, description = "No such overlay", body = ForgeError),
    ))]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    app.service.delete(&caller, id, query.reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Apply a lifecycle action. Transitions outside the state table are refused with 422 naming the
/// current state.
#[utoipa::path(post, path = "/overlays/{id}/{action}", tag = "overlays",
    params(("id" = Uuid, Path), ("action" = LifecycleAction, Path)),
    request_body(content = Option<ReasonBody>, description = "Optional; `reason` is required to suspend or quarantine"),
    responses(
        (status = 200, description = "The overlay in its new state", body = Data<Overlay>),
        (status = 403, description = "The caller's role may not take this action", body = ForgeError),
        (status = 404, description = "No such overlay or action", body = ForgeError),
        (status = 422, description = "Not allowed from the current state, or a reason is missing", body = ForgeError),
    ))]
pub async fn transition(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath((id, action)): ApiPath<(Uuid, LifecycleAction)>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Answer<Data<Overlay>> {
    ok(app.service.transition(&caller, id, action, body.reason).await?)
}

/// Set an overlay's trust level (admin; no higher than the admin's own).
#[utoipa::path(put, path = "/overlays/{id}/trust-level", tag = "overlays", params(("id" = Uuid, Path)),
    request_body = TrustLevelBody,
    responses(
        (status = 200, description = "The overlay at its new trust level", body = Data<Overlay>),
        (status = 403, description = "Not an admin, or above the admin's trust", body = ForgeError),
        (status = 404, description = "No such overlay", body = ForgeError),
    ))]
pub async fn set_trust_level(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<TrustLevelBody>,
) -> Answer<Data<Overlay>> {
    ok(app.service.set_trust_level(&caller, id, body.trust_level, body.reason).await?)
}

/// Invoke an entry point. 200 with the result whether or not the overlay succeeded; HTTP errors
/// only for refusals.
#[utoipa::path(post, path = "/overlays/{id}/invoke", tag = "invocation", params(("id" = Uuid, Path)),
    request_body = OverlayInvocation,
    responses(
        (status = 200, description = "The call ran (see `success`)", body = Data<OverlayResult>,
            headers(("X-Forge-Invocation-Id" = Uuid, description = "The call's id, as in the result and on its log entries"))),
        (status = 403, description = "The caller's trust cannot reach the overlay's, or it asked for `include_logs` without being the overlay's submitter, an admin or an operator", body = ForgeError),
        (status = 404, description = "No such overlay", body = ForgeError),
        (status = 422, description = "Not active, or not an entry point (`details.available`)", body = ForgeError),
        (status = 429, description = "Too many invocations in flight, their memory over `memory_budget_mb`, or no compiler turn for a first call; retry after `Retry-After` seconds", body = ForgeError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The stored binary is missing or fails verification", body = ForgeError),
    ))]
pub async fn invoke(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(invocation): ApiJson<OverlayInvocation>,
) -> Invoked {
    let service = app.service.clone();
    invoked(run_call(&app, async move { service.invoke(&caller, id, invocation).await }).await?)
}

/// Invoke the newest active version of the overlay named `name`.
#[utoipa::path(post, path = "/overlays/by-name/{name}/invoke", tag = "invocation", params(("name" = String, Path)),
    request_body = OverlayInvocation,
    responses(
        (status = 200, description = "The call ran (see `success`)", body = Data<OverlayResult>,
            headers(("X-Forge-Invocation-Id" = Uuid, description = "The call's id, as in the result and on its log entries"))),
        (status = 403, description = "The caller's trust cannot reach the overlay's, or it asked for `include_logs` without being the overlay's submitter, an admin or an operator", body = ForgeError),
        (status = 404, description = "No active overlay of that name", body = ForgeError),
        (status = 422, description = "Not an entry point (`details.available`)", body = ForgeError),
        (status = 429, description = "Too many invocations in flight, their memory over `memory_budget_mb`, or no compiler turn for a first call; retry after `Retry-After` seconds", body = ForgeError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The stored binary is missing or fails verification", body = ForgeError),
    ))]
pub async fn invoke_by_name(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(invocation): ApiJson<OverlayInvocation>,
) -> Invoked {
    let service = app.service.clone();
    invoked(run_call(&app, async move { service.invoke_by_name(&caller, &name, invocation).await }).await?)
}

/// An invocation's answer: its result, with its id also in the `X-Forge-Invocation-Id` header.
type Invoked =
    Result<(AppendHeaders<Option<(HeaderName, HeaderValue)>>, Json<Data<OverlayResult>>), ApiError>;

fn invoked(result: OverlayResult) -> Invoked {
    let id = result.invocation_id.map(|id| {
        let mut text = Uuid::encode_buffer();
        let value =
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).expect("a UUID is a header value");
        (HeaderName::from_static(INVOCATION_ID_HEADER), value)
    });
    Ok((AppendHeaders(id), Json(Data::new(result))))
}

/// Runs an invocation on a task of its own, tracked for shutdown: a client that disconnects drops
/// this handler, not the call, so the call still ends normally and its outcome is counted.
async fn run_call(
    app: &AppState,
    call: impl Future<Output = Result<OverlayResult, ForgeError>> + Send + 'static,
) -> Result<OverlayResult, ForgeError> {
    app.calls
        .spawn(call)
        .await
        .map_err(|e| ForgeError::internal(format!("the invocation task failed: {e}")))?
}

/// Health counters, failure rate and latency percentiles.
#[utoipa::path(get, path = "/overlays/{id}/health", tag = "overlays", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Health of the overlay", body = Data<HealthReport>),
        (status = 404, description = "No such overlay", body = ForgeError),
    ))]
pub async fn health(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer<Data<HealthReport>> {
    ok(app.service.health(&caller, id).await?)
}

/// The overlay's kept log, newest first: the lines its invocations logged (`log_info`, `log_error`,
/// WASI output) and the failures that ended them, within the server's `log_retention_*` bounds.
/// For the overlay's submitter, admins and operators: logs quote the overlay's input.
#[utoipa::path(get, path = "/overlays/{id}/logs", tag = "overlays", params(("id" = Uuid, Path), LogsQuery),
    responses(
        (status = 200, description = "The newest matching entries; `meta.total` counts every match", body = List<LogEntry>),
        (status = 403, description = "Not the overlay's submitter, an admin or an operator", body = ForgeError),
        (status = 404, description = "No such overlay", body = ForgeError),
        (status = 422, description = "A filter does not parse", body = ForgeError),
    ))]
pub async fn logs(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Answer<List<LogEntry>> {
    let query = LogQuery::from(query);
    let (entries, total) = app.service.logs(&caller, id, &query).await?;
    Ok((StatusCode::OK, Json(List::first(entries, total, query.limit))))
}

/// The overlay's audit trail, oldest first.
#[utoipa::path(get, path = "/overlays/{id}/events", tag = "overlays", params(("id" = Uuid, Path), PageQuery),
    responses((status = 200, description = "A page of audit events", body = List<AuditEvent>)))]
pub async fn events(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Answer<List<AuditEvent>> {
    let page = app.service.events(&caller, id, page.into()).await?;
    Ok((StatusCode::OK, Json(List::from(page))))
}
