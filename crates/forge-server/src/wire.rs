//! Descriptions for the OpenAPI document that no Rust type carries. The API's wire types
//! themselves are shared with clients in [`forge_model::api`].

use utoipa::ToSchema;

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
