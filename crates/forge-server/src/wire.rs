//! The API's own wire types: response envelopes, request bodies and query strings.

use forge_model::{
    CapabilityName, OverlayFilter, OverlayManifest, OverlayState, Page, PageRequest, TrustLevel, User,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A single resource: `{"data": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

impl<T> Data<T> {
    pub fn new(data: T) -> Self {
        Data { data }
    }
}

/// A list: `{"data": [...], "meta": {"total", "page", "per_page", "pages"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub meta: Meta,
}

/// Where a page sits in the whole list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// Items in the whole list.
    pub total: u64,
    /// This page, from 1.
    pub page: u32,
    pub per_page: u32,
    /// Pages in the whole list.
    pub pages: u32,
}

impl<T> From<Page<T>> for List<T> {
    fn from(page: Page<T>) -> Self {
        List {
            data: page.items,
            meta: Meta { total: page.total, page: page.page, per_page: page.per_page, pages: page.pages },
        }
    }
}

/// `POST /overlays` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterJson {
    /// The manifest as an object, or as TOML or JSON text.
    #[schema(value_type = ManifestInput)]
    pub manifest: Value,
    /// The module, base64 (standard alphabet): a WebAssembly binary or its text format.
    pub wasm_base64: String,
    /// Hex digest of the source the binary was built from.
    pub source_hash: Option<String>,
}

/// A manifest given as an object or as `overlay.toml` (or JSON) text.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `RegisterJson::manifest` only.
pub enum ManifestInput {
    Object(OverlayManifest),
    Text(String),
}

/// `POST /overlays` as `multipart/form-data`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the multipart body only; the parts are read one by one.
pub struct RegisterMultipart {
    /// `overlay.toml` text (or the manifest as JSON text).
    manifest: String,
    /// The module: a WebAssembly binary or its text format.
    #[schema(value_type = String, format = Binary)]
    wasm: Vec<u8>,
    /// Hex digest of the source the binary was built from.
    source_hash: Option<String>,
}

/// Body of a lifecycle action (optional; an empty body is no reason).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Recorded in the audit trail; required to suspend or quarantine.
    pub reason: Option<String>,
}

/// `PUT /overlays/{id}/trust-level`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustLevelBody {
    pub trust_level: TrustLevel,
    pub reason: Option<String>,
}

/// `DELETE /overlays/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Recorded in the audit trail.
    pub reason: Option<String>,
}

/// `GET /overlays` query: filters (combined with AND) and the page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub state: Option<OverlayState>,
    /// Who registered it.
    pub submitter: Option<String>,
    /// Part of the name.
    pub name: Option<String>,
    /// Holds this capability.
    pub capability: Option<CapabilityName>,
    /// From 1. Default: 1.
    pub page: Option<u32>,
    /// 1..=100. Default: 20.
    pub per_page: Option<u32>,
}

impl ListQuery {
    pub fn into_parts(self) -> (OverlayFilter, PageRequest) {
        let filter = OverlayFilter {
            state: self.state,
            submitter: self.submitter,
            name: self.name,
            capability: self.capability,
        };
        (filter, PageRequest::new(self.page, self.per_page))
    }
}

/// A page of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1. Default: 1.
    pub page: Option<u32>,
    /// 1..=100. Default: 20.
    pub per_page: Option<u32>,
}

impl From<PageQuery> for PageRequest {
    fn from(query: PageQuery) -> Self {
        PageRequest::new(query.page, query.per_page)
    }
}

/// `GET /capsules` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Full-text query.
    pub query: String,
    /// Most hits returned, 1..=100. Default: 10.
    pub limit: Option<u32>,
}

impl SearchQuery {
    pub const DEFAULT_LIMIT: u32 = 10;
}

/// `POST /users` answer: the user and its first token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: User,
    /// Bearer token (`fgo_...`); only its hash is stored.
    pub token: String,
}

/// `POST /tokens/revoke` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Your own token, or anyone's if you are an admin.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: bool,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerHealth {
    /// Always `ok` while the process serves.
    pub status: &'static str,
    /// Version of the server.
    pub version: &'static str,
}
