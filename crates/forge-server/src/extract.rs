//! Extractors: axum's, with every rejection turned into an [`ApiError`], plus the caller and the
//! registration body.

use crate::AppState;
use crate::error::ApiError;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Multipart, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use base64::Engine;
use bytes::Bytes;
use forge_model::api::RegisterJson;
use forge_model::{FieldError, ForgeError, OverlayManifest, Principal};
use forge_service::Registration;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// A JSON body (`Content-Type: application/json`).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters; one that does not parse is a 404.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A JSON body that may be left out: an empty body reads as `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if request.body().size_hint().exact() == Some(0) {
            return Ok(OptionalJson(T::default()));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(request, state).await?;
        Ok(OptionalJson(value))
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`; 401 without a valid token, 429
/// for a client address that failed too often (see `failed_auth_per_minute`).
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ForgeError::authentication("missing token: send `Authorization: Bearer <token>`")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ForgeError::authentication("the Authorization header must be `Bearer <token>`"))?;
        let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        let principal = match client {
            Some(client) => state.service.authenticate_client(token, client).await?,
            // In-process (tests): no address to hold failures against.
            None => state.service.authenticate(token).await?,
        };
        Ok(Caller(principal))
    }
}

/// A registration, sent as `multipart/form-data` (parts `manifest`, `wasm`, optional
/// `source_hash`) or as JSON ([`RegisterJson`]).
pub struct RegisterBody(pub Registration);

impl<S: Send + Sync> FromRequest<S> for RegisterBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.starts_with("multipart/form-data") {
            let multipart = Multipart::from_request(request, state).await?;
            return from_multipart(multipart).await.map(RegisterBody);
        }
        let ApiJson(body) = ApiJson::<RegisterJson>::from_request(request, state).await?;
        let wasm =
            base64::engine::general_purpose::STANDARD.decode(body.wasm_base64.as_bytes()).map_err(|e| {
                ForgeError::invalid_fields(
                    "registration",
                    vec![FieldError::new("wasm_base64", e.to_string())],
                )
            })?;
        Ok(RegisterBody(Registration {
            manifest: manifest_from(body.manifest)?,
            wasm: Bytes::from(wasm),
            source_hash: body.source_hash,
        }))
    }
}

/// A manifest object, or its TOML or JSON text.
fn manifest_from(value: Value) -> Result<OverlayManifest, ForgeError> {
    match value {
        Value::String(text) => OverlayManifest::parse(&text),
        object => OverlayManifest::from_value(object),
    }
}

async fn from_multipart(mut multipart: Multipart) -> Result<Registration, ApiError> {
    let (mut manifest, mut wasm, mut source_hash) = (None, None, None);
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or_default() {
            "manifest" => manifest = Some(field.text().await?),
            "wasm" => wasm = Some(field.bytes().await?),
            "source_hash" => source_hash = Some(field.text().await?),
            other => {
                let message = format!("unknown part `{other}` (expected manifest, wasm, source_hash)");
                return Err(ForgeError::invalid_fields(
                    "registration",
                    vec![FieldError::new(other, message)],
                )
                .into());
            }
        }
    }
    let missing: Vec<FieldError> = [("manifest", manifest.is_none()), ("wasm", wasm.is_none())]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(part, _)| FieldError::new(part, "is a required part"))
        .collect();
    match (manifest, wasm) {
        (Some(manifest), Some(wasm)) => {
            Ok(Registration { manifest: OverlayManifest::parse(&manifest)?, wasm, source_hash })
        }
        _ => Err(ForgeError::invalid_fields("registration", missing).into()),
    }
}
