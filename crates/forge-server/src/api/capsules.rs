//! `/api/v1/capsules`: seeding and inspecting the knowledge overlays read and write.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use forge_model::api::{Data, List, SearchQuery};
use forge_model::{Capsule, CapsuleHit, ForgeError, NewCapsule, Page, PageRequest};
use std::sync::Arc;
use uuid::Uuid;

/// Create a capsule owned by the caller (no more trusted than the caller).
#[utoipa::path(post, path = "/capsules", tag = "capsules", request_body = NewCapsule,
    responses(
        (status = 201, description = "Created", body = Data<Capsule>),
        (status = 403, description = "Above the caller's trust", body = ForgeError),
        (status = 422, description = "Invalid capsule", body = ForgeError),
    ))]
pub async fn create(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiJson(capsule): ApiJson<NewCapsule>,
) -> Result<(StatusCode, Json<Data<Capsule>>), ApiError> {
    let capsule = app.service.create_capsule(&caller, capsule).await?;
    Ok((StatusCode::CREATED, Json(Data::new(capsule))))
}

/// One capsule; one above the caller's trust is "not found", like a missing one.
#[utoipa::path(get, path = "/capsules/{id}", tag = "capsules", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The capsule", body = Data<Capsule>),
        (status = 404, description = "No such capsule within the caller's trust", body = ForgeError),
    ))]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Data<Capsule>>), ApiError> {
    Ok((StatusCode::OK, Json(Data::new(app.service.get_capsule(&caller, id).await?))))
}

/// Full-text search among the capsules within the caller's trust, best first, as one page.
#[utoipa::path(get, path = "/capsules", tag = "capsules", params(SearchQuery),
    responses(
        (status = 200, description = "Hits, content cut to 500 characters", body = List<CapsuleHit>),
        (status = 422, description = "No query", body = ForgeError),
    ))]
pub async fn search(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<(StatusCode, Json<List<CapsuleHit>>), ApiError> {
    let limit = query.limit.unwrap_or(SearchQuery::DEFAULT_LIMIT);
    let hits = app.service.search_capsules(&caller, &query.query, limit).await?;
    let total = hits.len() as u64;
    let page = Page::new(hits, total, PageRequest::new(Some(1), Some(limit)));
    Ok((StatusCode::OK, Json(List::from(page))))
}
