//! Overlay ABI v1 (docs/abi.md): the host functions, and the checks a module must pass before it runs.

use forge_model::{CapabilityName, FieldError, ForgeError, OverlayManifest};
use wasmtime::{ExternType, FuncType, Module, ValType};

/// Import module of the Forge host functions.
pub const FORGE_MODULE: &str = "forge";
/// Import module of WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// The guest's allocator: `(size: i32) -> i32`, 0 on failure.
pub const ALLOC_EXPORT: &str = "forge_alloc";
pub const MEMORY_EXPORT: &str = "memory";
/// Called once on each fresh instance, if exported (WASI reactors have one).
pub const INITIALIZE_EXPORT: &str = "_initialize";
/// A WASI command's `main`: its presence means the module was built as a command, not a reactor.
pub const START_EXPORT: &str = "_start";
/// Most export names one refusal lists.
const LISTED_EXPORTS_MAX: usize = 16;

/// The `code` of a host function's `{"error": {"code", "message"}}` answer: every code a guest can
/// see (docs/abi.md lists them; a test holds the two together).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum GuestErrorCode {
    /// The request is not valid JSON, or not the shape the function expects.
    InvalidRequest,
    /// No such item, or one the overlay's trust level cannot see (the guest is not told which).
    NotFound,
    /// The feature is not configured on this host.
    Unavailable,
    /// The call used up its host calls or their bytes (`max_host_calls`, `max_host_call_bytes`);
    /// nothing was done, and every later host call of this call gets the same answer.
    LimitExceeded,
    /// `http_request` refused a request inside the manifest's patterns: its name resolved to an
    /// address no pattern names literally, a redirect left the patterns or went past 5, the response
    /// passed `max_http_response_bytes`, or the call made its `max_http_requests`.
    NetworkDenied,
}

impl GuestErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A function the host offers in module `forge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFunction {
    LogInfo,
    LogError,
    Fail,
    RejectInput,
    CapsuleRead,
    CapsuleSearch,
    CapsuleCreate,
    CapsuleDelete,
    HttpRequest,
}

impl HostFunction {
    pub const ALL: [HostFunction; 9] = [
        HostFunction::LogInfo,
        HostFunction::LogError,
        HostFunction::Fail,
        HostFunction::RejectInput,
        HostFunction::CapsuleRead,
        HostFunction::CapsuleSearch,
        HostFunction::CapsuleCreate,
        HostFunction::CapsuleDelete,
        HostFunction::HttpRequest,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            HostFunction::LogInfo => "log_info",
            HostFunction::LogError => "log_error",
            HostFunction::Fail => "fail",
            HostFunction::RejectInput => "reject_input",
            HostFunction::CapsuleRead => "capsule_read",
            HostFunction::CapsuleSearch => "capsule_search",
            HostFunction::CapsuleCreate => "capsule_create",
            HostFunction::CapsuleDelete => "capsule_delete",
            HostFunction::HttpRequest => "http_request",
        }
    }

    pub fn from_name(name: &str) -> Option<HostFunction> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The capability a manifest must request to import this function; None = always granted.
    pub const fn required_capability(self) -> Option<CapabilityName> {
        match self {
            HostFunction::LogInfo
            | HostFunction::LogError
            | HostFunction::Fail
            | HostFunction::RejectInput => None,
            HostFunction::CapsuleRead | HostFunction::CapsuleSearch => Some(CapabilityName::CapsuleRead),
            HostFunction::CapsuleCreate => Some(CapabilityName::CapsuleWrite),
            HostFunction::CapsuleDelete => Some(CapabilityName::CapsuleDelete),
            HostFunction::HttpRequest => Some(CapabilityName::NetworkHttp),
        }
    }

    /// `(ptr, len)` for the fire-and-forget ones, `(req_ptr, req_len) -> i64` for request / response.
    pub const fn returns_response(self) -> bool {
        !matches!(
            self,
            HostFunction::LogInfo | HostFunction::LogError | HostFunction::Fail | HostFunction::RejectInput
        )
    }

    fn signature_text(self) -> &'static str {
        if self.returns_response() { "(i32, i32) -> i64" } else { "(i32, i32) -> ()" }
    }

    fn has_signature(self, ty: &FuncType) -> bool {
        let results: &[fn(&ValType) -> bool] = if self.returns_response() { &[is_i64] } else { &[] };
        signature_is(ty, &[is_i32, is_i32], results)
    }
}

fn is_i32(t: &ValType) -> bool {
    matches!(t, ValType::I32)
}
fn is_i64(t: &ValType) -> bool {
    matches!(t, ValType::I64)
}

fn signature_is(ty: &FuncType, params: &[fn(&ValType) -> bool], results: &[fn(&ValType) -> bool]) -> bool {
    ty.params().len() == params.len()
        && ty.results().len() == results.len()
        && ty.params().zip(params).all(|(t, check)| check(&t))
        && ty.results().zip(results).all(|(t, check)| check(&t))
}

/// What the checks learnt about a module that passed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The `forge` functions the module imports.
    pub host_imports: Vec<HostFunction>,
    /// Whether it imports WASI preview 1 (then a locked-down WASI context is linked).
    pub uses_wasi: bool,
    pub has_initialize: bool,
    /// Initial linear memory, in bytes.
    pub initial_memory_bytes: u64,
}

/// The module's exported function names other than the ABI's own, at most [`LISTED_EXPORTS_MAX`].
fn exported_functions(module: &Module) -> String {
    let mut names = module
        .exports()
        .filter(|e| matches!(e.ty(), ExternType::Func(_)))
        .map(|e| e.name())
        .filter(|name| !forge_model::manifest::RESERVED_EXPORTS.contains(name));
    // Names are the module's own text, so each is quoted briefly.
    let quoted = |name: &str| format!("`{}`", name.chars().take(64).collect::<String>());
    let listed: Vec<String> = names.by_ref().take(LISTED_EXPORTS_MAX).map(quoted).collect();
    let more = names.count();
    match (listed.is_empty(), more) {
        (true, _) => "none besides the ABI's own".to_owned(),
        (false, 0) => listed.join(", "),
        (false, more) => format!("{} and {more} more", listed.join(", ")),
    }
}

/// The registration checks of docs/abi.md, every violation reported at once.
pub fn check_module(module: &Module, manifest: &OverlayManifest) -> Result<ModuleInfo, ForgeError> {
    let mut errors = Vec::new();
    let mut info = ModuleInfo {
        host_imports: Vec::new(),
        uses_wasi: false,
        has_initialize: false,
        initial_memory_bytes: 0,
    };

    for import in module.imports() {
        let field = format!("wasm.imports.{}.{}", import.module(), import.name());
        match (import.module(), import.ty()) {
            (FORGE_MODULE, ExternType::Func(ty)) => match HostFunction::from_name(import.name()) {
                Some(function) if !function.has_signature(&ty) => errors.push(FieldError::new(
                    field,
                    format!("must have signature {}", function.signature_text()),
                )),
                Some(function) => {
                    if let Some(capability) = function.required_capability()
                        && !manifest.has_capability(capability)
                    {
                        errors.push(FieldError::new(
                            field,
                            format!(
                                "`{}` needs capability `{capability}`, which the manifest does not \
                                 request: add \"{capability}\" to `capabilities` in overlay.toml",
                                function.name()
                            ),
                        ));
                    }
                    info.host_imports.push(function);
                }
                None => errors.push(FieldError::new(field, "is not a Forge host function")),
            },
            (WASI_MODULE, ExternType::Func(_)) => info.uses_wasi = true,
            (FORGE_MODULE | WASI_MODULE, _) => errors.push(FieldError::new(field, "must be a function")),
            _ => errors.push(FieldError::new(
                field,
                format!(
                    "imports from `{}` are not allowed (only `{FORGE_MODULE}` and `{WASI_MODULE}`)",
                    import.module()
                ),
            )),
        }
    }

    match module.get_export(MEMORY_EXPORT) {
        Some(ExternType::Memory(memory)) if memory.is_64() || memory.is_shared() => {
            errors.push(FieldError::new("wasm.exports.memory", "must be a 32-bit, unshared memory"));
        }
        Some(ExternType::Memory(memory)) => {
            info.initial_memory_bytes = memory.minimum().saturating_mul(memory.page_size());
            let limit = u64::from(manifest.max_memory_mb) << 20;
            if info.initial_memory_bytes > limit {
                errors.push(FieldError::new(
                    "wasm.exports.memory",
                    format!(
                        "initial memory of {} bytes does not fit max_memory_mb = {}",
                        info.initial_memory_bytes, manifest.max_memory_mb
                    ),
                ));
            }
        }
        _ => errors.push(FieldError::new(
            "wasm.exports.memory",
            "the module must export its memory as `memory`: builds with the Forge SDKs do (Rust \
             cdylib with forge-sdk, clang with sdks/c, asc with sdks/assemblyscript); do not link \
             with --import-memory",
        )),
    }
    let export_func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Some(ty),
        _ => None,
    };
    match export_func(ALLOC_EXPORT) {
        Some(ty) if signature_is(&ty, &[is_i32], &[is_i32]) => {}
        Some(_) => {
            errors.push(FieldError::new("wasm.exports.forge_alloc", "must be exported as (i32) -> i32"))
        }
        None => errors.push(FieldError::new(
            "wasm.exports.forge_alloc",
            "is not exported; each Forge SDK provides it: Rust, depend on forge-sdk and use \
             `forge_sdk::entry_point!`; C, compile and link sdks/c/forge.c; AssemblyScript, \
             `export { forge_alloc }` from the SDK (without an SDK, export `forge_alloc(size: i32) -> i32`)",
        )),
    }
    if module.get_export(START_EXPORT).is_some() {
        errors.push(FieldError::new(
            "wasm.exports._start",
            "the module is built as a command (it exports `_start`), but overlays are called many \
             times: build it as a reactor: -mexec-model=reactor for C/clang, crate-type = \
             [\"cdylib\"] (a library, not a binary) for Rust, --exportStart _initialize for \
             AssemblyScript",
        ));
    }
    let mut exported = None;
    for entry_point in &manifest.entry_points {
        match export_func(entry_point) {
            Some(ty) if signature_is(&ty, &[is_i32, is_i32], &[is_i64]) => {}
            Some(_) => errors.push(FieldError::new(
                format!("wasm.exports.{entry_point}"),
                "entry point must have signature (i32, i32) -> i64",
            )),
            None => errors.push(FieldError::new(
                format!("wasm.exports.{entry_point}"),
                format!(
                    "entry point listed in the manifest is not exported by the module (it exports \
                     functions: {}); export it (Rust: `forge_sdk::entry_point!({entry_point})`; C: \
                     `FORGE_ENTRY_POINT({entry_point}, handler)`; AssemblyScript: `export function \
                     {entry_point}(ptr: usize, len: usize): u64`) or remove it from `entry_points`",
                    exported.get_or_insert_with(|| exported_functions(module))
                ),
            )),
        }
    }
    match export_func(INITIALIZE_EXPORT) {
        Some(ty) if signature_is(&ty, &[], &[]) => info.has_initialize = true,
        Some(_) => errors.push(FieldError::new("wasm.exports._initialize", "must have signature () -> ()")),
        None => {}
    }

    if errors.is_empty() { Ok(info) } else { Err(ForgeError::invalid_fields("module", errors)) }
}

#[cfg(test)]
mod tests {
    use super::GuestErrorCode;
    use strum::VariantArray;

    /// The first column of docs/abi.md's table of guest-visible error codes.
    fn documented_codes() -> Vec<String> {
        let doc = include_str!("../../../docs/abi.md");
        let table = doc.split("| code | meaning |").nth(1).expect("docs/abi.md has a table of error codes");
        table
            .lines()
            .skip(2) // the rest of the header line, and the separator
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.split('|').nth(1).unwrap().trim().trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn abi_doc_lists_exactly_the_guest_error_codes() {
        let codes: Vec<String> = GuestErrorCode::VARIANTS.iter().map(|c| c.to_string()).collect();
        assert_eq!(documented_codes(), codes);
    }
}
