//! An overlay project on disk: `new` writes one from a template, `build` runs its manifest's
//! `[build]` command, and the local commands find its manifest and module by default.

use clap::{Args, ValueEnum};
use forge_model::{ForgeError, OverlayManifest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The manifest a project keeps in its root, found when no path is given.
pub const MANIFEST_FILE: &str = "overlay.toml";

/// Exit status when the build itself failed (the project was found and read).
const BUILD_FAILED: u8 = 1;
/// Exit status when there is nothing to build: no manifest, or no `[build]` table.
const NOTHING_TO_BUILD: u8 = 2;

/// A project's files: (path in the project, text), compiled in.
type Files = &'static [(&'static str, &'static str)];

/// Files from `templates/<language>/`, whose text has `{{placeholders}}`.
macro_rules! template {
    ($language:literal: $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../templates/", $language, "/", $file)))),+]
    };
}

/// Files of this checkout written into a project as they are, so it builds without the checkout.
macro_rules! vendored {
    ($($from:literal => $to:literal),+ $(,)?) => {
        &[$(($to, include_str!(concat!("../../../", $from)))),+]
    };
}

/// Languages `new` writes projects in; each is a directory under `templates/`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Language {
    /// A cdylib crate on forge-sdk, built for wasm32-unknown-unknown.
    Rust,
    /// A WASI reactor built with clang-14, with the C SDK and cJSON copied into the project.
    C,
    /// An npm package on the AssemblyScript SDK, built with asc.
    Assemblyscript,
}

impl Language {
    fn template(self) -> Files {
        match self {
            Language::Rust => {
                template!("rust": "overlay.toml", "Cargo.toml", "src/lib.rs", "README.md", ".gitignore")
            }
            Language::C => template!("c": "overlay.toml", "overlay.c", "README.md", ".gitignore"),
            Language::Assemblyscript => template!(
                "assemblyscript": "overlay.toml", "package.json", ".npmrc", "overlay.ts", "README.md",
                ".gitignore"
            ),
        }
    }

    /// The SDK files a project carries itself (C has no package manager to fetch them).
    fn vendored(self) -> Files {
        match self {
            Language::Rust | Language::Assemblyscript => &[],
            Language::C => vendored!(
                "sdks/c/forge.h" => "forge-sdk/forge.h",
                "sdks/c/forge.c" => "forge-sdk/forge.c",
                "sdks/c/vendor/cjson/cJSON.h" => "forge-sdk/vendor/cjson/cJSON.h",
                "sdks/c/vendor/cjson/cJSON.c" => "forge-sdk/vendor/cjson/cJSON.c",
                "sdks/c/vendor/cjson/LICENSE" => "forge-sdk/vendor/cjson/LICENSE",
            ),
        }
    }

    /// Where a Forge checkout keeps the SDK a project depends on by path (the SDKs are not
    /// published); `None` when the project carries its SDK.
    fn sdk_in_checkout(self) -> Option<&'static str> {
        match self {
            Language::Rust => Some("crates/forge-sdk"),
            Language::C => None,
            Language::Assemblyscript => Some("sdks/assemblyscript"),
        }
    }

    /// How the project's package file names the SDK at `path`: a quoted string, which JSON and
    /// TOML read alike, so quotes and backslashes in the path stay escaped.
    fn sdk_dependency(self, path: &str) -> String {
        let dependency = match self {
            Language::Assemblyscript => format!("file:{path}"),
            Language::Rust | Language::C => path.to_owned(),
        };
        serde_json::to_string(&dependency).expect("a string serializes")
    }
}

/// The checkout this binary was built from, whose SDKs generated projects depend on.
const BUILT_CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

#[derive(Args)]
pub struct NewArgs {
    /// The overlay's name (`^[a-z0-9-]+$`), also the directory the project is written to.
    name: String,
    /// The language of the project.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    lang: Language,
    /// The SDK to depend on (Rust: `crates/forge-sdk`, AssemblyScript: `sdks/assemblyscript` of a
    /// Forge checkout); default: the one of the checkout this binary was built from. C projects
    /// carry their SDK.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The manifest whose `[build]` command to run, in the manifest's directory.
    #[arg(long, default_value = MANIFEST_FILE)]
    manifest: PathBuf,
}

/// Writes a project in `./NAME` that builds, validates and runs as it is.
pub fn new(args: NewArgs) -> ExitCode {
    match write_project(&args) {
        Ok(()) => {
            eprintln!("created {0}/: cd {0} && forge-overlay build && forge-overlay run", args.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(NOTHING_TO_BUILD)
        }
    }
}

fn write_project(args: &NewArgs) -> Result<(), ForgeError> {
    // The manifest's own rules decide which names are valid.
    OverlayManifest::with_defaults(&args.name, forge_model::manifest::limits::ENTRY_POINT_DEFAULT)?;
    let crate_name = args.name.replace('-', "_");
    if matches!(args.lang, Language::Rust) && crate_name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ForgeError::validation("a Rust package name cannot start with a digit"));
    }
    let sdk = sdk_dependency(args)?;
    let placeholders =
        [("{{name}}", args.name.as_str()), ("{{crate}}", crate_name.as_str()), ("{{sdk}}", sdk.as_str())];

    let root = Path::new(&args.name);
    std::fs::create_dir(root).map_err(|e| io_error(root, e))?;
    let filled = args.lang.template().iter().map(|(file, text)| {
        (*file, placeholders.iter().fold(text.to_string(), |text, (key, value)| text.replace(key, value)))
    });
    let vendored = args.lang.vendored().iter().map(|(file, text)| (*file, text.to_string()));
    for (file, text) in filled.chain(vendored) {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))?;
    }
    Ok(())
}

/// The `{{sdk}}` placeholder: the SDK the project depends on, as its package file names it
/// (empty for a language whose projects carry their SDK).
fn sdk_dependency(args: &NewArgs) -> Result<String, ForgeError> {
    let language = args.lang.to_possible_value().expect("every language is a value");
    let language = language.get_name();
    let Some(in_checkout) = args.lang.sdk_in_checkout() else {
        return match args.sdk_path {
            Some(_) => Err(ForgeError::validation(format!(
                "a {language} project carries its SDK: --sdk-path is for rust and assemblyscript"
            ))),
            None => Ok(String::new()),
        };
    };
    let sdk = args.sdk_path.clone().unwrap_or_else(|| Path::new(BUILT_CHECKOUT).join(in_checkout));
    let sdk = std::fs::canonicalize(&sdk).map_err(|e| {
        ForgeError::validation(format!(
            "the {language} SDK is not at {} ({e}): pass --sdk-path with {in_checkout} of a Forge \
             checkout",
            sdk.display()
        ))
    })?;
    Ok(args.lang.sdk_dependency(&sdk.to_string_lossy()))
}

fn io_error(path: &Path, error: std::io::Error) -> ForgeError {
    ForgeError::validation(format!("{}: {error}", path.display()))
}

/// Runs the manifest's `[build].command` with `sh -c` in its directory, then checks the module it
/// names exists; prints the module's path.
pub fn build(args: BuildArgs) -> ExitCode {
    let (manifest, dir) = match read_manifest(&args.manifest) {
        Ok(found) => found,
        Err(e) => return nothing_to_build(&e),
    };
    let build = match build_table(&manifest, &args.manifest, "") {
        Ok(build) => build,
        Err(e) => return nothing_to_build(&e),
    };
    eprintln!("building {}: {}", manifest.name, build.command);
    // The command's output goes to stderr: stdout carries only the module's path.
    let command = std::process::Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(&dir)
        .stdout(std::io::stderr())
        .status();
    match command {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("error: the build command failed ({status}); its output is above");
            return ExitCode::from(BUILD_FAILED);
        }
        Err(e) => {
            eprintln!("error: cannot run the build command with sh: {e}");
            return ExitCode::from(BUILD_FAILED);
        }
    }
    let wasm = dir.join(&build.wasm);
    match std::fs::metadata(&wasm) {
        Ok(file) if file.is_file() => {
            eprintln!("built {} ({} bytes)", wasm.display(), file.len());
            println!("{}", wasm.display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "error: the build command succeeded but {} does not exist: make [build].wasm name \
                 the module it writes",
                wasm.display()
            );
            ExitCode::from(BUILD_FAILED)
        }
    }
}

fn nothing_to_build(error: &ForgeError) -> ExitCode {
    eprintln!("error: {}", error.message);
    ExitCode::from(NOTHING_TO_BUILD)
}

/// The manifest at `path` and the directory its relative paths start from.
fn read_manifest(path: &Path) -> Result<(OverlayManifest, PathBuf), ForgeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (run this in an overlay project, e.g. one made by `forge-overlay new NAME`, or pass \
             --manifest)"
        } else {
            ""
        };
        ForgeError::validation(format!("cannot read {}: {e}{hint}", path.display()))
    })?;
    let manifest = OverlayManifest::parse(&text)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((manifest, dir))
}

/// The manifest's `[build]` table, or an error saying how to add one (`or_else` names another way).
fn build_table<'a>(
    manifest: &'a OverlayManifest,
    path: &Path,
    or_else: &str,
) -> Result<&'a forge_model::BuildSpec, ForgeError> {
    manifest.build.as_ref().ok_or_else(|| {
        ForgeError::validation(format!(
            "{} has no [build] table: add one with `command` (how to build) and `wasm` (the module \
             it writes){or_else}",
            path.display()
        ))
    })
}

/// The manifest (`./overlay.toml` unless given) and the module its `[build].wasm` names, for the
/// local commands run without `--wasm`.
pub fn built_module(manifest_path: Option<&Path>) -> Result<(OverlayManifest, PathBuf), ForgeError> {
    let path = manifest_path.unwrap_or(Path::new(MANIFEST_FILE));
    let (manifest, dir) = read_manifest(path)?;
    let wasm = dir.join(&build_table(&manifest, path, ", or pass --wasm")?.wasm);
    if !wasm.is_file() {
        return Err(ForgeError::validation(format!(
            "{} does not exist yet: run `forge-overlay build` first",
            wasm.display()
        )));
    }
    Ok((manifest, wasm))
}
