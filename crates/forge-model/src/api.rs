//! The HTTP API's wire types: response envelopes, request bodies and query strings.
//!
//! The server reads and writes these, and clients (`forge-client`) send and read the very same
//! types, so the two cannot drift apart. Resources themselves (overlays, results, capsules, ...) are
//! the model's own types; these only wrap them.

use crate::{
    CapabilityName, CapsuleType, LogLevel, LogQuery, NewCapsule, NewUser, OverlayFilter, OverlayState, Page,
    PageRequest, Role, TrustLevel, User,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The response header carrying an invocation's id (also its result's `invocation_id`).
pub const INVOCATION_ID_HEADER: &str = "x-forge-invocation-id";

/// A single resource: `{"data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Data<T> {
    pub data: T,
}

impl<T> Data<T> {
    pub fn new(data: T) -> Self {
        Data { data }
    }
}

/// A list: `{"data": [...], "meta": {"total", "page", "per_page", "pages"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct List<T> {
    pub data: Vec<T>,
    pub meta: Meta,
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterJson {
    /// The manifest as an object, or as TOML or JSON text.
    #[cfg_attr(feature = "openapi", schema(value_type = ManifestInput))]
    pub manifest: Value,
    /// The module, base64 (standard alphabet): a WebAssembly binary or its text format.
    pub wasm_base64: String,
    /// Hex digest of the source the binary was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
}

/// How OpenAPI describes [`RegisterJson::manifest`]: a manifest object, or `overlay.toml` (or
/// JSON) text. Serde reads the field as any JSON value and the server tells the two apart.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // A description only: never built.
pub enum ManifestInput {
    Object(crate::OverlayManifest),
    Text(String),
}

/// Body of a lifecycle action (optional; an empty body is no reason).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Recorded in the audit trail; required to suspend or quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /overlays/{id}/trust-level`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrustLevelBody {
    pub trust_level: TrustLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `DELETE /overlays/{id}` query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Recorded in the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /overlays` query: filters (combined with AND) and the page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<OverlayState>,
    /// Who registered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
    /// Part of the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Holds this capability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<CapabilityName>,
    /// From 1. Default: 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// 1..=100. Default: 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
}

impl ListQuery {
    /// A query for `filter`'s overlays, on the page `page` asks for.
    pub fn new(filter: OverlayFilter, page: PageQuery) -> Self {
        let OverlayFilter { state, submitter, name, capability } = filter;
        ListQuery { state, submitter, name, capability, page: page.page, per_page: page.per_page }
    }

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

/// A page of a list; the server's defaults fill in what is left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// From 1. Default: 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// 1..=100. Default: 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
}

impl From<PageQuery> for PageRequest {
    fn from(query: PageQuery) -> Self {
        PageRequest::new(query.page, query.per_page)
    }
}

/// `GET /overlays/{id}/logs` query: the overlay's kept log entries, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Most entries returned, 1..=1000. Default: 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only entries written after this instant (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only entries at least this serious: `error` gives errors and failures only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Only the entries of this invocation: its lines and, if it failed, its failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<Uuid>,
}

impl From<LogsQuery> for LogQuery {
    /// Out-of-range limits are brought into range, as pages are.
    fn from(query: LogsQuery) -> Self {
        LogQuery {
            limit: query.limit.unwrap_or(LogQuery::DEFAULT_LIMIT).clamp(1, LogQuery::MAX_LIMIT),
            since: query.since,
            level: query.level,
            invocation_id: query.invocation_id,
        }
    }
}

impl<T> List<T> {
    /// The first `limit` items of a list of `total` (lists read by a limit, not by pages).
    pub fn first(data: Vec<T>, total: u64, limit: u32) -> Self {
        let pages = total.div_ceil(u64::from(limit.max(1))) as u32;
        List { data, meta: Meta { total, page: 1, per_page: limit, pages } }
    }
}

/// `GET /capsules` query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Full-text query.
    pub query: String,
    /// Most hits returned, 1..=100. Default: 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl SearchQuery {
    pub const DEFAULT_LIMIT: u32 = 10;
}

/// `POST /users` answer: the user and its first token, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedUser {
    pub user: User,
    /// Bearer token (`fgo_...`); only its hash is stored.
    pub token: String,
}

/// `POST /tokens/revoke` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Your own token, or anyone's if you are an admin.
    pub token: String,
}

/// `POST /tokens/revoke` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revoked {
    pub revoked: bool,
}

/// One of a user's API tokens as an admin sees it (`GET /users/{name}/tokens`): never the token,
/// never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// The first 12 hex digits of the token's SHA-256 (`printf %s "$TOKEN" | sha256sum` starts with
    /// them): tells tokens apart without revealing any.
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// When it was revoked; null while it authenticates (unless its user is disabled).
    pub revoked_at: Option<DateTime<Utc>>,
    /// True for the token installed from `FORGE_ADMIN_TOKEN`.
    pub bootstrap: bool,
}

/// `POST /users/{name}/revoke-tokens` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedTokens {
    /// How many live tokens were revoked (0 if the user had none).
    pub revoked: u64,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerHealth {
    /// Always `ok` while the process serves.
    pub status: String,
    /// Version of the server.
    pub version: String,
}

impl NewCapsule {
    /// `content` of `capsule_type`, with what the server fills in when a client leaves it out
    /// (standard trust, no metadata).
    pub fn new(content: impl Into<String>, capsule_type: CapsuleType) -> Self {
        with_wire_defaults(json!({"content": content.into(), "type": capsule_type}))
    }
}

impl NewUser {
    /// User `name` holding `roles`, with what the server fills in when a client leaves it out
    /// (standard trust).
    pub fn new(name: impl Into<String>, roles: Vec<Role>) -> Self {
        with_wire_defaults(json!({"name": name.into(), "roles": roles}))
    }
}

/// Reads a request body holding only its required fields, so the others take the defaults serde
/// declares on `T`: a client starts from exactly what the server would assume, declared once.
fn with_wire_defaults<T: DeserializeOwned>(required: Value) -> T {
    serde_json::from_value(required).expect("the required fields of a request body read back")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries_leave_out_what_is_unset() {
        let query = ListQuery::new(
            OverlayFilter { state: Some(OverlayState::Active), ..OverlayFilter::default() },
            PageQuery { page: Some(2), per_page: None },
        );
        assert_eq!(serde_json::to_value(&query).unwrap(), json!({"state": "active", "page": 2}));
        assert_eq!(serde_json::to_value(ReasonBody::default()).unwrap(), json!({}));
    }

    #[test]
    fn request_bodies_start_from_the_server_defaults() {
        let capsule = NewCapsule::new("c", CapsuleType::Code);
        assert_eq!((capsule.trust_level, capsule.metadata.len()), (TrustLevel::Standard, 0));
        let user = NewUser::new("u", vec![Role::User]);
        assert_eq!((user.name.as_str(), user.trust_level), ("u", TrustLevel::Standard));
    }

    #[test]
    fn a_list_reads_back_what_a_page_writes() {
        let list = List::from(Page::new(vec![1, 2], 5, PageRequest::new(Some(2), Some(2))));
        let wire = serde_json::to_value(&list).unwrap();
        assert_eq!(wire, json!({"data": [1, 2], "meta": {"total": 5, "page": 2, "per_page": 2, "pages": 3}}));
        assert_eq!(serde_json::from_value::<List<u32>>(wire).unwrap(), list);
    }
}
