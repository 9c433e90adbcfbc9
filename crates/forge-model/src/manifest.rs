//! The overlay manifest (`overlay.toml`, or JSON) and its validation rules.

use crate::capability::{Capability, CapabilityName};
use crate::error::{FieldError, ForgeError, abbreviated};
use crate::network::HostPattern;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Defaults and bounds of the manifest's limits, in one place.
pub mod limits {
    pub const NAME_MAX_CHARS: usize = 100;
    pub const DESCRIPTION_MAX_CHARS: usize = 1000;
    pub const AUTHOR_MAX_CHARS: usize = 100;
    pub const MEMORY_MB_DEFAULT: u32 = 64;
    pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<u32> = 1..=512;
    pub const EXECUTION_MS_DEFAULT: u32 = 5000;
    pub const EXECUTION_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=30_000;
    pub const FUEL_DEFAULT: u64 = 1_000_000;
    pub const ENTRY_POINT_DEFAULT: &str = "process";
    /// Longest entry point name; wasm allows more, but no author needs it.
    pub const ENTRY_POINT_MAX_CHARS: usize = 128;
    /// Most entry points one manifest may list: each costs an export lookup at every preparation.
    pub const ENTRY_POINTS_MAX: usize = 64;
    /// Most hosts a `network:http` capability may list.
    pub const HTTP_HOSTS_MAX: usize = 64;
    /// Most mounts one `file:read` or `file:write` capability may name.
    pub const FILE_MOUNTS_MAX: usize = 16;
    /// Longest guest path a mount appears at.
    pub const GUEST_PATH_MAX_CHARS: usize = 255;
    /// Longest `[build].command`.
    pub const BUILD_COMMAND_MAX_CHARS: usize = 1000;
    /// Longest `[build].wasm` path.
    pub const BUILD_WASM_MAX_CHARS: usize = 255;
    /// Most violations one answer lists; a hostile manifest could otherwise make the error larger
    /// than itself.
    pub const ERRORS_MAX: usize = 32;
}

/// Exports that the ABI itself defines; they cannot be entry points.
pub const RESERVED_EXPORTS: &[&str] = &["memory", "forge_alloc", "_initialize", "_start"];

/// A validated overlay manifest. Build one with [`OverlayManifest::parse`], [`OverlayManifest::from_value`]
/// or deserialization, all of which apply every rule and report every violation at once.
///
/// ```
/// use forge_model::OverlayManifest;
/// let m = OverlayManifest::parse(r#"
///     name = "text-stats"
///     version = "1.0.0"
///     capabilities = ["capsule:read"]
/// "#).unwrap();
/// assert_eq!(m.max_memory_mb, 64);
/// assert_eq!(m.entry_points, ["process"]);
/// ```
///
/// It serializes as its plain fields, every one present; when read, only `name` and `version` are
/// required (the schema marks the others optional, with their defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(description = "The overlay manifest (`overlay.toml` as an object). Only `name` and \
        `version` are required; the others take the defaults shown. Written back, every field is present.")
)]
#[serde(try_from = "Value")]
pub struct OverlayManifest {
    /// `^[a-z0-9-]+$`, 1-100 characters.
    pub name: String,
    /// `MAJOR.MINOR.PATCH`, digits only.
    pub version: String,
    /// At most 1000 characters.
    #[cfg_attr(feature = "openapi", schema(required = false, default = ""))]
    pub description: String,
    /// At most 100 characters.
    #[cfg_attr(feature = "openapi", schema(required = false, default = ""))]
    pub author: String,
    /// Each listed once; a name alone (`"capsule:read"`) is short for `{"name": "capsule:read"}`.
    #[cfg_attr(feature = "openapi", schema(required = false, default = json!([])))]
    pub capabilities: Vec<Capability>,
    /// 1..=512.
    #[cfg_attr(feature = "openapi", schema(required = false, default = json!(limits::MEMORY_MB_DEFAULT)))]
    pub max_memory_mb: u32,
    /// 100..=30000.
    #[cfg_attr(
        feature = "openapi",
        schema(required = false, default = json!(limits::EXECUTION_MS_DEFAULT))
    )]
    pub max_execution_ms: u32,
    /// At least 1.
    #[cfg_attr(feature = "openapi", schema(required = false, default = json!(limits::FUEL_DEFAULT)))]
    pub max_fuel: u64,
    /// Exported functions callers may invoke, each listed once.
    #[cfg_attr(
        feature = "openapi",
        schema(required = false, default = json!([limits::ENTRY_POINT_DEFAULT]))
    )]
    pub entry_points: Vec<String>,
    /// How to build the module from source, for `forge-overlay build`; the service keeps it but
    /// never reads it.
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub build: Option<BuildSpec>,
}

/// The `[build]` table: how the author's tools turn the source next to `overlay.toml` into the
/// module, as in Spin's manifests. Local tooling only: registration neither needs nor runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildSpec {
    /// Run by `sh -c` in the manifest's directory; 1-1000 characters.
    pub command: String,
    /// The module the command produces, relative to the manifest's directory and inside it;
    /// 1-255 characters.
    pub wasm: String,
}

impl OverlayManifest {
    /// A manifest with every default, for running a module that came without one.
    pub fn with_defaults(name: &str, entry_point: &str) -> Result<Self, ForgeError> {
        let mut fields = Map::new();
        fields.insert("name".into(), name.into());
        fields.insert("version".into(), "0.0.0".into());
        fields.insert("entry_points".into(), Value::Array(vec![entry_point.into()]));
        Self::from_value(Value::Object(fields))
    }

    /// Parses `overlay.toml` text, or JSON when the text is a JSON object.
    pub fn parse(text: &str) -> Result<Self, ForgeError> {
        let value = if text.trim_start().starts_with('{') {
            serde_json::from_str::<Value>(text)
                .map_err(|e| ForgeError::validation(format!("manifest is not valid JSON: {e}")))?
        } else {
            let table: toml::Table = toml::from_str(text)
                .map_err(|e| ForgeError::validation(format!("manifest is not valid TOML: {e}")))?;
            serde_json::to_value(table).map_err(|e| ForgeError::validation(format!("manifest: {e}")))?
        };
        Self::from_value(value)
    }

    /// Validates a manifest given as a JSON value.
    pub fn from_value(value: Value) -> Result<Self, ForgeError> {
        let Value::Object(mut fields) = value else {
            return Err(ForgeError::validation("manifest must be an object (a TOML table or JSON object)"));
        };
        let mut errors = Vec::new();
        let mut take = |key: &str| fields.remove(key);
        let name = take("name");
        let version = take("version");
        let description = take("description");
        let author = take("author");
        let capabilities = take("capabilities");
        let max_memory_mb = take("max_memory_mb");
        let max_execution_ms = take("max_execution_ms");
        let max_fuel = take("max_fuel");
        let entry_points = take("entry_points");
        let build = take("build");
        for unknown in fields.keys() {
            errors.push(FieldError::new(abbreviated(unknown, QUOTED_MAX_CHARS), "is not a manifest field"));
        }

        let manifest = OverlayManifest {
            name: check_name(name, &mut errors),
            version: check_version(version, &mut errors),
            description: optional_text(
                description,
                "description",
                limits::DESCRIPTION_MAX_CHARS,
                &mut errors,
            ),
            author: optional_text(author, "author", limits::AUTHOR_MAX_CHARS, &mut errors),
            capabilities: check_capabilities(capabilities, &mut errors),
            max_memory_mb: bounded(
                max_memory_mb,
                "max_memory_mb",
                limits::MEMORY_MB_DEFAULT,
                limits::MEMORY_MB_RANGE,
                &mut errors,
            ),
            max_execution_ms: bounded(
                max_execution_ms,
                "max_execution_ms",
                limits::EXECUTION_MS_DEFAULT,
                limits::EXECUTION_MS_RANGE,
                &mut errors,
            ),
            max_fuel: bounded(max_fuel, "max_fuel", limits::FUEL_DEFAULT, 1..=u64::MAX, &mut errors),
            entry_points: check_entry_points(entry_points, &mut errors),
            build: check_build(build, &mut errors),
        };
        if errors.is_empty() {
            return Ok(manifest);
        }
        if errors.len() > limits::ERRORS_MAX {
            let more = errors.len() - limits::ERRORS_MAX;
            errors.truncate(limits::ERRORS_MAX);
            errors.push(FieldError::new("manifest", format!("has {more} more errors not listed")));
        }
        Err(ForgeError::invalid_fields("manifest", errors))
    }

    /// A manifest as a registration stored it: decoded field by field without today's rules, so
    /// that a rule tightened later never makes an overlay registered before unreadable. Only what
    /// is not a manifest at all (a field missing or of the wrong type) is an error.
    pub fn from_stored(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value::<Stored>(value).map(Self::from)
    }

    /// Deserializes a manifest as [`from_stored`](Self::from_stored) reads it: for records of
    /// registered overlays (`Overlay::manifest`), never for a manifest submitted to register.
    pub fn deserialize_stored<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Stored::deserialize(deserializer).map(Self::from)
    }

    /// The manifest as `overlay.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest is always representable in TOML")
    }

    pub fn has_capability(&self, name: CapabilityName) -> bool {
        self.capabilities.iter().any(|c| c.name == name)
    }

    /// The capability entry for `name`, with its constraints, if requested.
    pub fn capability(&self, name: CapabilityName) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }

    /// The parsed `constraints.hosts` of `network:http`: where `http_request` may go. Empty (nothing
    /// allowed) without the capability or its hosts; stored manifests were validated, so a pattern
    /// that no longer parses is left out rather than widening anything.
    pub fn http_host_patterns(&self) -> Vec<HostPattern> {
        self.capability(CapabilityName::NetworkHttp)
            .and_then(|c| c.constraints.as_ref())
            .and_then(|c| c.get("hosts"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|host| host.as_str()?.parse().ok())
            .collect()
    }

    /// The operator mounts its `file:read` / `file:write` capabilities name, in manifest order.
    pub fn mount_grants(&self) -> Vec<MountGrant> {
        let grants = |name: CapabilityName, write: bool| {
            let mounts = self.capability(name).and_then(|c| c.constraints.as_ref()?.get("mounts").cloned());
            let mounts: Vec<MountRef> =
                mounts.and_then(|m| serde_json::from_value(m).ok()).unwrap_or_default();
            mounts.into_iter().map(move |m| MountGrant { mount: m.mount, path: m.path, write })
        };
        grants(CapabilityName::FileRead, false).chain(grants(CapabilityName::FileWrite, true)).collect()
    }

    /// Privileged capabilities this manifest requests (those need admin approval).
    pub fn privileged_capabilities(&self) -> Vec<CapabilityName> {
        self.capabilities.iter().map(|c| c.name).filter(|c| c.is_privileged()).collect()
    }
}

/// An operator mount a `file:read` (`write: false`) or `file:write` (`write: true`) capability names,
/// and the absolute guest path it appears at. Manifests never name host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountGrant {
    pub mount: String,
    pub path: String,
    pub write: bool,
}

/// One entry of `constraints.mounts`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MountRef {
    mount: String,
    path: String,
}

/// A mount name, as the operator defines it and manifests name it: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn is_valid_mount_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

/// An absolute guest path without `.`, `..` or empty components (`/docs`, `/data/in`), not `/`
/// itself, at most [`limits::GUEST_PATH_MAX_CHARS`] characters, without NUL or backslash.
pub fn is_valid_guest_path(path: &str) -> bool {
    path.len() <= limits::GUEST_PATH_MAX_CHARS
        && !path.contains(['\0', '\\'])
        && path
            .strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(|part| !part.is_empty() && part != "." && part != ".."))
}

/// The fields of a stored manifest, read without checks; a missing optional field takes its
/// default, as the OpenAPI schema says.
#[derive(Deserialize)]
struct Stored {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    capabilities: Vec<Capability>,
    #[serde(default = "stored_defaults::max_memory_mb")]
    max_memory_mb: u32,
    #[serde(default = "stored_defaults::max_execution_ms")]
    max_execution_ms: u32,
    #[serde(default = "stored_defaults::max_fuel")]
    max_fuel: u64,
    #[serde(default = "stored_defaults::entry_points")]
    entry_points: Vec<String>,
    build: Option<BuildSpec>,
}

/// [`limits`]' defaults as serde default functions.
mod stored_defaults {
    use super::limits;
    pub fn max_memory_mb() -> u32 {
        limits::MEMORY_MB_DEFAULT
    }
    pub fn max_execution_ms() -> u32 {
        limits::EXECUTION_MS_DEFAULT
    }
    pub fn max_fuel() -> u64 {
        limits::FUEL_DEFAULT
    }
    pub fn entry_points() -> Vec<String> {
        vec![limits::ENTRY_POINT_DEFAULT.to_owned()]
    }
}

impl From<Stored> for OverlayManifest {
    fn from(stored: Stored) -> Self {
        let Stored {
            name,
            version,
            description,
            author,
            capabilities,
            max_memory_mb,
            max_execution_ms,
            max_fuel,
            entry_points,
            build,
        } = stored;
        OverlayManifest {
            name,
            version,
            description,
            author,
            capabilities,
            max_memory_mb,
            max_execution_ms,
            max_fuel,
            entry_points,
            build,
        }
    }
}

impl TryFrom<Value> for OverlayManifest {
    type Error = ForgeError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

fn check_name(value: Option<Value>, errors: &mut Vec<FieldError>) -> String {
    let Some(name) = required_string(value, "name", errors) else { return String::new() };
    let length = name.chars().count();
    if length == 0 || length > limits::NAME_MAX_CHARS {
        errors.push(FieldError::new("name", format!("must be 1-{} characters", limits::NAME_MAX_CHARS)));
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        errors.push(FieldError::new("name", "must match ^[a-z0-9-]+$ (lower-case letters, digits, hyphens)"));
    }
    name
}

/// `^\d+\.\d+\.\d+$`: plain semver, no pre-release or build suffix.
pub fn is_plain_semver(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_version(value: Option<Value>, errors: &mut Vec<FieldError>) -> String {
    let Some(version) = required_string(value, "version", errors) else { return String::new() };
    if !is_plain_semver(&version) {
        errors.push(FieldError::new("version", "must be MAJOR.MINOR.PATCH digits, e.g. 1.2.0"));
    } else if semver::Version::parse(&version).is_err() {
        errors.push(FieldError::new("version", "has a number too large or a leading zero"));
    }
    version
}

fn required_string(value: Option<Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn optional_text(
    value: Option<Value>,
    field: &str,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.chars().count() <= max_chars => s,
        Some(Value::String(_)) => {
            errors.push(FieldError::new(field, format!("must be at most {max_chars} characters")));
            String::new()
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            String::new()
        }
    }
}

fn bounded<T>(
    value: Option<Value>,
    field: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    errors: &mut Vec<FieldError>,
) -> T
where
    T: TryFrom<u64> + PartialOrd + Copy + std::fmt::Display,
{
    let message = || format!("must be an integer between {} and {}", range.start(), range.end());
    match value {
        None | Some(Value::Null) => default,
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| T::try_from(n).ok()) {
            Some(v) if range.contains(&v) => v,
            _ => {
                errors.push(FieldError::new(field, message()));
                default
            }
        },
        Some(_) => {
            errors.push(FieldError::new(field, message()));
            default
        }
    }
}

fn check_capabilities(value: Option<Value>, errors: &mut Vec<FieldError>) -> Vec<Capability> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new("capabilities", "must be a list"));
            return Vec::new();
        }
    };
    if items.len() > CapabilityName::ALL.len() {
        errors.push(FieldError::new(
            "capabilities",
            format!(
                "lists {} entries; there are only {} capabilities",
                items.len(),
                CapabilityName::ALL.len()
            ),
        ));
        return Vec::new();
    }
    let mut capabilities: Vec<Capability> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("capabilities[{i}]");
        // `"capsule:read"` is shorthand for `{name = "capsule:read"}`.
        let (name, constraints) = match item {
            Value::String(name) => (name, None),
            Value::Object(mut entry) => {
                let name = entry.remove("name");
                let constraints = entry.remove("constraints");
                for unknown in entry.keys() {
                    let unknown = abbreviated(unknown, QUOTED_MAX_CHARS);
                    errors.push(FieldError::new(format!("{field}.{unknown}"), "is not a capability field"));
                }
                let constraints = match constraints {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(map)) => Some(map),
                    Some(_) => {
                        errors
                            .push(FieldError::new(format!("{field}.constraints"), "must be a table/object"));
                        None
                    }
                };
                match name {
                    Some(Value::String(name)) => (name, constraints),
                    _ => {
                        errors.push(FieldError::new(
                            format!("{field}.name"),
                            "is required and must be a string",
                        ));
                        continue;
                    }
                }
            }
            _ => {
                errors.push(FieldError::new(field, "must be a capability name or {name, constraints}"));
                continue;
            }
        };
        match name.parse::<CapabilityName>() {
            Ok(name) if capabilities.iter().any(|c| c.name == name) => {
                errors.push(FieldError::new(field, format!("`{name}` is listed twice")));
            }
            Ok(name) => {
                if let Some(constraints) = &constraints {
                    check_constraints(name, constraints, &field, errors);
                } else if matches!(name, CapabilityName::FileRead | CapabilityName::FileWrite) {
                    errors.push(FieldError::new(
                        field.clone(),
                        format!(
                            "`{name}` needs `constraints.mounts`, the operator mounts it reaches: \
                             {{ name = \"{name}\", constraints = {{ mounts = [{{ mount = \"docs\", \
                             path = \"/docs\" }}] }} }}"
                        ),
                    ));
                }
                capabilities.push(Capability { name, constraints })
            }
            Err(message) => errors.push(FieldError::new(field, message)),
        }
    }
    check_guest_paths_unique(&capabilities, errors);
    capabilities
}

/// Each guest path names one mount: two preopens at one path would hide one of them.
fn check_guest_paths_unique(capabilities: &[Capability], errors: &mut Vec<FieldError>) {
    let mut seen = std::collections::HashSet::new();
    for capability in capabilities {
        let Some(Value::Array(mounts)) = capability.constraints.as_ref().and_then(|c| c.get("mounts")) else {
            continue;
        };
        for path in mounts.iter().filter_map(|m| m.get("path")?.as_str()) {
            if !seen.insert(path) {
                errors.push(FieldError::new(
                    "capabilities",
                    format!("guest path {} is given to two mounts", abbreviated(path, QUOTED_MAX_CHARS)),
                ));
            }
        }
    }
}

/// Constraints are checked as strictly as the capability itself: a misspelt key or a malformed host
/// would otherwise narrow the grant to nothing without telling the author.
fn check_constraints(
    name: CapabilityName,
    constraints: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    let accepted: &[&str] = match name {
        CapabilityName::NetworkHttp => &["hosts"],
        CapabilityName::FileRead | CapabilityName::FileWrite => &["mounts"],
        _ => &[],
    };
    for key in constraints.keys().filter(|key| !accepted.contains(&key.as_str())) {
        let key = abbreviated(key, QUOTED_MAX_CHARS);
        let message = match accepted {
            [] => format!("`{name}` takes no constraints"),
            keys => format!("is not a `{name}` constraint (known: {})", keys.join(", ")),
        };
        errors.push(FieldError::new(format!("{field}.constraints.{key}"), message));
    }
    if let Some(hosts) = constraints.get("hosts") {
        check_http_hosts(hosts, &format!("{field}.constraints.hosts"), errors);
    }
    if let Some(mounts) = constraints.get("mounts") {
        check_file_mounts(mounts, &format!("{field}.constraints.mounts"), errors);
    }
}

fn check_file_mounts(mounts: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let shape = "must be a list of { mount = \"NAME\", path = \"/GUEST/PATH\" }";
    let Value::Array(mounts) = mounts else {
        errors.push(FieldError::new(field, shape));
        return;
    };
    if mounts.is_empty() || mounts.len() > limits::FILE_MOUNTS_MAX {
        errors.push(FieldError::new(field, format!("must name 1 to {} mounts", limits::FILE_MOUNTS_MAX)));
        return;
    }
    for (i, entry) in mounts.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Ok(MountRef { mount, path }) = serde_json::from_value::<MountRef>(entry.clone()) else {
            errors.push(FieldError::new(field, shape));
            continue;
        };
        if !is_valid_mount_name(&mount) {
            errors.push(FieldError::new(
                format!("{field}.mount"),
                format!(
                    "must be an operator mount name (lowercase letters, digits, `-`, `_`; 1-64 characters), \
                     got {}",
                    abbreviated(&mount, QUOTED_MAX_CHARS)
                ),
            ));
        }
        if !is_valid_guest_path(&path) {
            errors.push(FieldError::new(
                format!("{field}.path"),
                format!(
                    "must be an absolute guest path such as `/docs`, without `.` or `..` parts, at most \
                     {} characters, got {}",
                    limits::GUEST_PATH_MAX_CHARS,
                    abbreviated(&path, QUOTED_MAX_CHARS)
                ),
            ));
        }
    }
}

fn check_http_hosts(hosts: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Value::Array(hosts) = hosts else {
        errors.push(FieldError::new(field, "must be a list of host names"));
        return;
    };
    if hosts.len() > limits::HTTP_HOSTS_MAX {
        errors.push(FieldError::new(field, format!("must list at most {} hosts", limits::HTTP_HOSTS_MAX)));
        return;
    }
    for (i, host) in hosts.iter().enumerate() {
        let problem = match host {
            Value::String(text) => text.parse::<HostPattern>().err(),
            _ => Some("is not a string".to_owned()),
        };
        if let Some(problem) = problem {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "{} is not a host pattern (`api.example.com`, `https://*.example.com:443`, \
                     `http://10.0.0.0/8:8000-8100`): {problem}",
                    abbreviated(&host.to_string(), QUOTED_MAX_CHARS)
                ),
            ));
        }
    }
}

fn check_build(value: Option<Value>, errors: &mut Vec<FieldError>) -> Option<BuildSpec> {
    let mut table = match value {
        None | Some(Value::Null) => return None,
        Some(Value::Object(table)) => table,
        Some(_) => {
            errors.push(FieldError::new("build", "must be a table with `command` and `wasm`"));
            return None;
        }
    };
    let command = table.remove("command");
    let wasm = table.remove("wasm");
    for unknown in table.keys() {
        errors.push(FieldError::new(
            format!("build.{}", abbreviated(unknown, QUOTED_MAX_CHARS)),
            "is not a build field (known: command, wasm)",
        ));
    }
    let before = errors.len();
    let command = required_text(command, "build.command", limits::BUILD_COMMAND_MAX_CHARS, errors);
    let wasm = required_text(wasm, "build.wasm", limits::BUILD_WASM_MAX_CHARS, errors);
    if let Some(path) = &wasm
        && !is_relative_inside(path)
    {
        errors.push(FieldError::new(
            "build.wasm",
            "must be a relative path inside the manifest's directory (no leading `/`, no `..`)",
        ));
    }
    match (command, wasm) {
        (Some(command), Some(wasm)) if errors.len() == before => Some(BuildSpec { command, wasm }),
        _ => None,
    }
}

/// A required string of 1..=`max_chars` characters.
fn required_text(
    value: Option<Value>,
    field: &str,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let text = required_string(value, field, errors)?;
    if (1..=max_chars).contains(&text.chars().count()) {
        Some(text)
    } else {
        errors.push(FieldError::new(field, format!("must be 1-{max_chars} characters")));
        None
    }
}

/// Whether `path` names a file below the directory it is read from: manifests carry no host paths.
fn is_relative_inside(path: &str) -> bool {
    std::path::Path::new(path)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// Longest piece of input a manifest refusal quotes.
const QUOTED_MAX_CHARS: usize = 80;

/// Whether `name` can be an entry point: an identifier-like export name not reserved by the ABI.
pub fn is_valid_entry_point(name: &str) -> bool {
    let mut bytes = name.bytes();
    let starts_well = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    starts_well
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= limits::ENTRY_POINT_MAX_CHARS
        && !RESERVED_EXPORTS.contains(&name)
}

fn check_entry_points(value: Option<Value>, errors: &mut Vec<FieldError>) -> Vec<String> {
    let items = match value {
        None | Some(Value::Null) => return vec![limits::ENTRY_POINT_DEFAULT.to_owned()],
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new("entry_points", "must be a list of export names"));
            return Vec::new();
        }
    };
    if items.is_empty() {
        errors.push(FieldError::new("entry_points", "must not be empty"));
    }
    if items.len() > limits::ENTRY_POINTS_MAX {
        errors.push(FieldError::new(
            "entry_points",
            format!("must list at most {} entry points", limits::ENTRY_POINTS_MAX),
        ));
        return Vec::new();
    }
    let mut entry_points: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("entry_points[{i}]");
        match item {
            Value::String(name) if seen.contains(&name) => {
                errors.push(FieldError::new(field, format!("`{name}` is listed twice")));
            }
            Value::String(name) if is_valid_entry_point(&name) => {
                seen.insert(name.clone());
                entry_points.push(name)
            }
            Value::String(name) => errors.push(FieldError::new(
                field,
                format!(
                    "{} is not a valid entry point: use [A-Za-z_][A-Za-z0-9_]* (at most {} characters), \
                     not one of {}",
                    abbreviated(&format!("`{name}`"), QUOTED_MAX_CHARS),
                    limits::ENTRY_POINT_MAX_CHARS,
                    RESERVED_EXPORTS.join(", ")
                ),
            )),
            _ => errors.push(FieldError::new(field, "must be a string")),
        }
    }
    entry_points
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields_of(err: ForgeError) -> Vec<String> {
        serde_json::from_value::<Vec<FieldError>>(err.details["errors"].clone())
            .unwrap()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let m = OverlayManifest::from_value(json!({"name": "echo", "version": "0.1.0"})).unwrap();
        assert_eq!((m.max_memory_mb, m.max_execution_ms, m.max_fuel), (64, 5000, 1_000_000));
        assert_eq!(m.entry_points, ["process"]);
        assert!(m.capabilities.is_empty());
        assert_eq!(m.description, "");
    }

    #[test]
    fn toml_with_tables_and_shorthand() {
        let m = OverlayManifest::parse(
            r#"
            name = "insight"
            version = "2.10.3"
            author = "forge team"
            entry_points = ["process", "summarize"]
            max_memory_mb = 16
            capabilities = ["capsule:read", { name = "network:http", constraints = { hosts = ["api.example.com"] } }]
            "#,
        )
        .unwrap();
        assert_eq!(m.capabilities.len(), 2);
        assert!(m.has_capability(CapabilityName::NetworkHttp));
        assert_eq!(
            m.capability(CapabilityName::NetworkHttp).unwrap().constraints.as_ref().unwrap()["hosts"][0],
            "api.example.com"
        );
        assert_eq!(m.entry_points, ["process", "summarize"]);
        let again = OverlayManifest::parse(&m.to_toml()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn json_is_accepted_and_round_trips() {
        let m = OverlayManifest::parse(r#"{"name": "a-1", "version": "1.0.0", "max_fuel": 5}"#).unwrap();
        let back: OverlayManifest = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let err = OverlayManifest::from_value(json!({
            "name": "Bad_Name",
            "version": "1.0",
            "description": "x".repeat(1001),
            "author": "y".repeat(101),
            "capabilities": ["capsule:read", "capsule:read", "teleport"],
            "max_memory_mb": 513,
            "max_execution_ms": 99,
            "max_fuel": 0,
            "entry_points": ["process", "process", "memory", "9lives"],
            "colour": "blue"
        }))
        .unwrap_err();
        assert_eq!(err.code.http_status(), 422);
        let fields = fields_of(err);
        for expected in [
            "name",
            "version",
            "description",
            "author",
            "capabilities[1]",
            "capabilities[2]",
            "max_memory_mb",
            "max_execution_ms",
            "max_fuel",
            "entry_points[1]",
            "entry_points[2]",
            "entry_points[3]",
            "colour",
        ] {
            assert!(fields.contains(&expected.to_owned()), "missing {expected} in {fields:?}");
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let ok = json!({"name": "a", "version": "0.0.1", "max_memory_mb": 512, "max_execution_ms": 100});
        assert!(OverlayManifest::from_value(ok).is_ok());
        let ok = json!({"name": "a".repeat(100), "version": "10.20.30", "max_memory_mb": 1, "max_execution_ms": 30000});
        assert!(OverlayManifest::from_value(ok).is_ok());
        let too_long = json!({"name": "a".repeat(101), "version": "1.0.0"});
        assert_eq!(fields_of(OverlayManifest::from_value(too_long).unwrap_err()), ["name"]);
    }

    #[test]
    fn missing_and_mistyped_fields() {
        let err =
            OverlayManifest::from_value(json!({"max_memory_mb": "lots", "entry_points": []})).unwrap_err();
        assert_eq!(fields_of(err), ["name", "version", "max_memory_mb", "entry_points"]);
        assert!(OverlayManifest::from_value(json!([1, 2])).is_err());
        assert!(OverlayManifest::parse("name = ").unwrap_err().message.contains("TOML"));
        assert!(OverlayManifest::parse("{\"name\": ").unwrap_err().message.contains("JSON"));
    }

    #[test]
    fn version_rules() {
        for good in ["0.0.0", "1.2.3", "10.0.99"] {
            assert!(is_plain_semver(good), "{good}");
        }
        for bad in ["1.2", "1.2.3-beta", "v1.2.3", "1..3", "1.2.3.4", "a.b.c"] {
            assert!(!is_plain_semver(bad), "{bad}");
        }
    }

    #[test]
    fn list_lengths_are_bounded_before_each_item_is_checked() {
        let many: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
        let err = OverlayManifest::from_value(json!({"name": "a", "version": "1.0.0", "entry_points": many}))
            .unwrap_err();
        assert_eq!(fields_of(err), ["entry_points"]);
        let err = OverlayManifest::from_value(
            json!({"name": "a", "version": "1.0.0", "capabilities": vec!["capsule:read"; 9]}),
        )
        .unwrap_err();
        assert_eq!(fields_of(err), ["capabilities"]);
    }

    #[test]
    fn the_error_list_is_capped_and_quotes_input_briefly() {
        let mut fields = Map::new();
        fields.insert("name".into(), "a".into());
        fields.insert("version".into(), "1.0.0".into());
        for i in 0..1000 {
            fields.insert(format!("{}{i}", "k".repeat(10_000)), Value::Null);
        }
        let err = OverlayManifest::from_value(Value::Object(fields)).unwrap_err();
        let fields = fields_of(err.clone());
        assert_eq!(fields.len(), limits::ERRORS_MAX + 1);
        assert_eq!(fields.last().unwrap(), "manifest");
        assert!(serde_json::to_string(&err).unwrap().len() < 10_000, "the answer quotes whole keys");
    }

    #[test]
    fn http_host_constraints_are_checked_not_dropped() {
        let manifest = |constraints: Value| {
            OverlayManifest::from_value(json!({
                "name": "a", "version": "1.0.0",
                "capabilities": [{"name": "network:http", "constraints": constraints}]
            }))
        };
        let allowed =
            ["api.example.com", "*.example.org", "localhost", "http://127.0.0.1:8080", "https://*:*"];
        assert!(manifest(json!({ "hosts": allowed })).is_ok());
        let field = "capabilities[0].constraints.hosts";
        for bad in [json!("api.example.com"), json!({"a": 1})] {
            assert_eq!(fields_of(manifest(json!({"hosts": bad})).unwrap_err()), [field]);
        }
        for bad in ["ftp://api.example.com", "api.example.com:443", "", "bad host", "-a.com", "a..b"] {
            let err = manifest(json!({"hosts": [bad]})).unwrap_err();
            assert!(err.message.contains(&format!("{bad:?} is not a host pattern")), "{}", err.message);
            assert_eq!(fields_of(err), [format!("{field}[0]")], "{bad:?}");
        }
        assert_eq!(fields_of(manifest(json!({"hosts": [7]})).unwrap_err()), [format!("{field}[0]")]);
        let too_many: Vec<String> =
            (0..=limits::HTTP_HOSTS_MAX).map(|i| format!("h{i}.example.com")).collect();
        assert_eq!(fields_of(manifest(json!({"hosts": too_many})).unwrap_err()), [field]);
        let err = manifest(json!({"host": ["api.example.com"]})).unwrap_err();
        assert_eq!(fields_of(err), ["capabilities[0].constraints.host"]);
        let err = OverlayManifest::from_value(json!({
            "name": "a", "version": "1.0.0",
            "capabilities": [{"name": "capsule:read", "constraints": {"hosts": []}}]
        }))
        .unwrap_err();
        assert_eq!(fields_of(err), ["capabilities[0].constraints.hosts"]);
    }

    #[test]
    fn the_build_table_is_optional_and_round_trips() {
        let m = OverlayManifest::parse(
            r#"
            name = "hello"
            version = "0.1.0"
            [build]
            command = "cargo build --release --target wasm32-unknown-unknown"
            wasm = "out/hello.wasm"
            "#,
        )
        .unwrap();
        let build = m.build.as_ref().unwrap();
        assert_eq!(
            (build.command.as_str(), build.wasm.as_str()),
            ("cargo build --release --target wasm32-unknown-unknown", "out/hello.wasm")
        );
        assert_eq!(OverlayManifest::parse(&m.to_toml()).unwrap(), m);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(OverlayManifest::from_value(json).unwrap(), m);
        let without = OverlayManifest::parse("name = \"a\"\nversion = \"1.0.0\"").unwrap();
        assert_eq!(without.build, None);
        assert!(!without.to_toml().contains("build"), "no empty table is written");
        assert_eq!(OverlayManifest::from_value(serde_json::to_value(&without).unwrap()).unwrap(), without);
    }

    #[test]
    fn the_build_table_is_checked_like_every_field() {
        let manifest = |build: Value| {
            OverlayManifest::from_value(json!({"name": "a", "version": "1.0.0", "build": build}))
        };
        assert!(manifest(json!({"command": "make", "wasm": "./a.wasm"})).is_ok());
        assert_eq!(fields_of(manifest(json!("make")).unwrap_err()), ["build"]);
        let err = manifest(json!({"command": "make", "wasm": "a.wasm", "comand": "x"})).unwrap_err();
        assert_eq!(fields_of(err), ["build.comand"]);
        assert_eq!(fields_of(manifest(json!({})).unwrap_err()), ["build.command", "build.wasm"]);
        for outside in ["/tmp/a.wasm", "../a.wasm", "out/../../a.wasm"] {
            let err = manifest(json!({"command": "make", "wasm": outside})).unwrap_err();
            assert_eq!(fields_of(err), ["build.wasm"], "{outside}");
        }
        let long = json!({
            "command": "x".repeat(limits::BUILD_COMMAND_MAX_CHARS + 1),
            "wasm": "a".repeat(limits::BUILD_WASM_MAX_CHARS + 1),
        });
        assert_eq!(fields_of(manifest(long).unwrap_err()), ["build.command", "build.wasm"]);
        let empty = json!({"command": "", "wasm": 7});
        assert_eq!(fields_of(manifest(empty).unwrap_err()), ["build.command", "build.wasm"]);
    }

    #[test]
    fn entry_point_rules() {
        assert!(is_valid_entry_point("process"));
        assert!(is_valid_entry_point("_private2"));
        for bad in ["", "9x", "with-dash", "memory", "forge_alloc", "_initialize", "héllo"] {
            assert!(!is_valid_entry_point(bad), "{bad}");
        }
    }

    fn with_files(capabilities: Value) -> Result<OverlayManifest, ForgeError> {
        OverlayManifest::from_value(
            json!({"name": "files", "version": "1.0.0", "capabilities": capabilities}),
        )
    }

    #[test]
    fn file_capabilities_name_mounts_and_guest_paths() {
        let m = OverlayManifest::parse(
            r#"
            name = "files"
            version = "1.0.0"
            capabilities = [
                { name = "file:read", constraints = { mounts = [{ mount = "docs", path = "/docs" }] } },
                { name = "file:write", constraints = { mounts = [{ mount = "out_1", path = "/data/out" }] } },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(
            m.mount_grants(),
            [
                MountGrant { mount: "docs".into(), path: "/docs".into(), write: false },
                MountGrant { mount: "out_1".into(), path: "/data/out".into(), write: true },
            ]
        );
        assert_eq!(m.privileged_capabilities(), [CapabilityName::FileWrite]);
    }

    #[test]
    fn file_mounts_are_refused_naming_what_is_wrong() {
        let field = "capabilities[0].constraints.mounts";
        let read =
            |mounts: Value| with_files(json!([{"name": "file:read", "constraints": {"mounts": mounts}}]));
        for bad_path in ["docs", "/", "/docs/../etc", "/./docs", "/docs//x", "/a\\b", "/docs/"] {
            let err = read(json!([{"mount": "docs", "path": bad_path}])).unwrap_err();
            assert_eq!(fields_of(err), [format!("{field}[0].path")], "{bad_path}");
        }
        for bad_mount in ["", "Docs", "-docs", "../docs", "/srv/docs"] {
            let err = read(json!([{"mount": bad_mount, "path": "/docs"}])).unwrap_err();
            assert_eq!(fields_of(err), [format!("{field}[0].mount")], "{bad_mount}");
        }
        let host_path = read(json!([{"mount": "docs", "path": "/docs", "dir": "/etc"}])).unwrap_err();
        assert_eq!(fields_of(host_path), [format!("{field}[0]")], "no host paths, no unknown keys");
        assert_eq!(fields_of(read(json!([])).unwrap_err()), [field]);
        assert_eq!(fields_of(read(json!("docs")).unwrap_err()), [field]);
        let bare = with_files(json!(["file:read"])).unwrap_err();
        assert_eq!(fields_of(bare.clone()), ["capabilities[0]"]);
        assert!(Value::Object(bare.details.clone()).to_string().contains("constraints.mounts"), "{bare:?}");
        let twice = with_files(json!([
            {"name": "file:read", "constraints": {"mounts": [{"mount": "a", "path": "/x"}]}},
            {"name": "file:write", "constraints": {"mounts": [{"mount": "b", "path": "/x"}]}},
        ]))
        .unwrap_err();
        assert_eq!(fields_of(twice), ["capabilities"]);
    }
}
