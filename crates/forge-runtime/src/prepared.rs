//! A checked, pre-linked overlay: what `Runtime::prepare` builds once and every call instantiates.

use crate::abi::{self, ModuleInfo};
use crate::files::MountedPath;
use crate::host::{self, Grants, HostServices};
use crate::state::CallState;
use forge_model::{ForgeError, OverlayManifest};
use std::sync::Arc;
use wasmtime::{Engine, InstancePre, Linker, Module, ModuleExport};

/// The exports a call uses, resolved once so that instantiating costs no lookups by name.
pub(crate) struct Exports {
    pub memory: ModuleExport,
    pub alloc: ModuleExport,
    pub initialize: Option<ModuleExport>,
    pub entry_points: Vec<(String, ModuleExport)>,
}

/// A checked, pre-linked overlay: instantiating it per call costs no lookups by name.
pub struct PreparedOverlay {
    pre: InstancePre<CallState>,
    exports: Exports,
    info: ModuleInfo,
    max_fuel: u64,
    max_memory_mb: u32,
    max_execution_ms: u32,
    /// The operator mounts its `file:read` / `file:write` grants reach (preopened if it uses WASI).
    mounts: Vec<MountedPath>,
}

impl PreparedOverlay {
    /// Links a module that passed the checks (`info`) with exactly the host functions it was granted.
    pub(crate) fn link(
        engine: &Engine,
        module: &Module,
        manifest: &OverlayManifest,
        info: ModuleInfo,
        services: &HostServices,
        mounts: Vec<MountedPath>,
    ) -> Result<PreparedOverlay, ForgeError> {
        let mut linker = Linker::<CallState>::new(engine);
        let grants = Arc::new(Grants::of(manifest, services));
        host::link(&mut linker, &info, &grants)
            .and_then(|()| linker.instantiate_pre(module))
            .map(|pre| {
                let export = |name: &str| module.get_export_index(name).expect("checked by check_module");
                let exports = Exports {
                    memory: export(abi::MEMORY_EXPORT),
                    alloc: export(abi::ALLOC_EXPORT),
                    initialize: info.has_initialize.then(|| export(abi::INITIALIZE_EXPORT)),
                    entry_points: manifest
                        .entry_points
                        .iter()
                        .map(|name| (name.clone(), export(name)))
                        .collect(),
                };
                PreparedOverlay {
                    pre,
                    exports,
                    info,
                    max_fuel: manifest.max_fuel,
                    max_memory_mb: manifest.max_memory_mb,
                    max_execution_ms: manifest.max_execution_ms,
                    mounts,
                }
            })
            .map_err(|e| ForgeError::validation(format!("the module cannot be linked: {e:#}")))
    }

    /// What the registration checks learnt about the module.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    pub fn entry_points(&self) -> impl Iterator<Item = &str> {
        self.exports.entry_points.iter().map(|(name, _)| name.as_str())
    }

    pub(crate) fn entry_point(&self, function: &str) -> Option<&ModuleExport> {
        self.exports.entry_points.iter().find(|(name, _)| name == function).map(|(_, export)| export)
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<CallState> {
        &self.pre
    }
    pub(crate) fn exports(&self) -> &Exports {
        &self.exports
    }
    pub(crate) fn uses_wasi(&self) -> bool {
        self.info.uses_wasi
    }
    pub(crate) fn mounts(&self) -> &[MountedPath] {
        &self.mounts
    }
    pub(crate) fn max_fuel(&self) -> u64 {
        self.max_fuel
    }
    pub(crate) fn max_memory_mb(&self) -> u32 {
        self.max_memory_mb
    }
    pub(crate) fn max_execution_ms(&self) -> u32 {
        self.max_execution_ms
    }
}
