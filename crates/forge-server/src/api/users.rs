//! `/api/v1/users` and `/api/v1/tokens`.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use forge_model::ForgeError;
use forge_model::NewUser;
use forge_model::api::{CreatedUser, Data, RevokeBody, Revoked};
use std::sync::Arc;

/// Create a user (admin); the answer holds its API token, shown this once.
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Created, with its token", body = Data<CreatedUser>),
        (status = 403, description = "Not an admin, or above the admin's trust", body = ForgeError),
        (status = 409, description = "A user of that name exists", body = ForgeError),
        (status = 422, description = "Invalid user", body = ForgeError),
    ))]
pub async fn create(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiJson(new_user): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Data<CreatedUser>>), ApiError> {
    let (user, token) = app.service.create_user(&caller, new_user).await?;
    Ok((StatusCode::CREATED, Json(Data::new(CreatedUser { user, token }))))
}

/// Revoke a token: your own, or anyone's as an admin. Applies at once.
#[utoipa::path(post, path = "/tokens/revoke", tag = "users", request_body = RevokeBody,
    responses(
        (status = 200, description = "Revoked", body = Data<Revoked>),
        (status = 404, description = "No such live token of the caller's", body = ForgeError),
    ))]
pub async fn revoke_token(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<(StatusCode, Json<Data<Revoked>>), ApiError> {
    app.service.revoke_token(&caller, &body.token).await?;
    Ok((StatusCode::OK, Json(Data::new(Revoked { revoked: true }))))
}
