//! `/api/v1/users` and `/api/v1/tokens`: creating users, revoking tokens, and an admin's control of
//! a user's tokens and access.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use forge_model::ForgeError;
use forge_model::api::{CreatedUser, Data, List, PageQuery, RevokeBody, Revoked, RevokedTokens, TokenInfo};
use forge_model::{NewUser, User};
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

/// A user's tokens, revoked ones too, oldest first (admin): metadata only, never a token or its
/// hash.
#[utoipa::path(get, path = "/users/{name}/tokens", tag = "users", params(("name" = String, Path), PageQuery),
    responses(
        (status = 200, description = "A page of the user's tokens", body = List<TokenInfo>),
        (status = 403, description = "Not an admin, or below the user's trust", body = ForgeError),
        (status = 404, description = "No such user", body = ForgeError),
    ))]
pub async fn tokens(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<(StatusCode, Json<List<TokenInfo>>), ApiError> {
    let tokens = app.service.user_tokens(&caller, &name, page.into()).await?;
    Ok((StatusCode::OK, Json(List::from(tokens))))
}

/// Revoke every live token of a user (admin). Applies at once on this server, within
/// `token_cache_ttl` on others.
#[utoipa::path(post, path = "/users/{name}/revoke-tokens", tag = "users", params(("name" = String, Path)),
    responses(
        (status = 200, description = "How many tokens were revoked", body = Data<RevokedTokens>),
        (status = 403, description = "Not an admin, or below the user's trust", body = ForgeError),
        (status = 404, description = "No such user", body = ForgeError),
    ))]
pub async fn revoke_tokens(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<Data<RevokedTokens>>), ApiError> {
    let revoked = app.service.revoke_user_tokens(&caller, &name).await?;
    Ok((StatusCode::OK, Json(Data::new(RevokedTokens { revoked }))))
}

/// Disable a user (admin): none of its tokens authenticates until it is enabled again. Applies at
/// once on this server, within `token_cache_ttl` on others.
#[utoipa::path(post, path = "/users/{name}/disable", tag = "users", params(("name" = String, Path)),
    responses(
        (status = 200, description = "The user, disabled", body = Data<User>),
        (status = 403, description = "Not an admin, or below the user's trust", body = ForgeError),
        (status = 404, description = "No such user", body = ForgeError),
        (status = 422, description = "An admin cannot disable itself", body = ForgeError),
    ))]
pub async fn disable(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<Data<User>>), ApiError> {
    let user = app.service.set_user_disabled(&caller, &name, true).await?;
    Ok((StatusCode::OK, Json(Data::new(user))))
}

/// Enable a disabled user again (admin): its tokens that were not revoked work again.
#[utoipa::path(post, path = "/users/{name}/enable", tag = "users", params(("name" = String, Path)),
    responses(
        (status = 200, description = "The user, enabled", body = Data<User>),
        (status = 403, description = "Not an admin, or below the user's trust", body = ForgeError),
        (status = 404, description = "No such user", body = ForgeError),
    ))]
pub async fn enable(
    State(app): State<Arc<AppState>>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<Data<User>>), ApiError> {
    let user = app.service.set_user_disabled(&caller, &name, false).await?;
    Ok((StatusCode::OK, Json(Data::new(user))))
}
