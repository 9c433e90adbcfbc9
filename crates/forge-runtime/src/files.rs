//! Operator mounts behind `file:read` / `file:write`, exposed to guests as WASI preview 1 preopens.
//!
//! A `file:read` grant preopens the mount's directory read-only at the guest path. A `file:write`
//! grant preopens a fresh, empty per-call staging directory at its guest path instead: the guest
//! writes there, and only when the call succeeds and stays within its quotas are the staged files
//! moved into the mount, each copied to a temporary name beside its target and renamed over it. So
//! concurrent calls on one mount never see each other's half-written files under their final
//! names, and a failed call leaves the mount untouched. Only regular files and directories are
//! committed; symlinks a guest made are dropped. Escapes by `..`, absolute paths or symlinks are
//! refused by WASI's capability-based path resolution (each preopen is its own root).

use crate::config::Mount;
use crate::state::{Abort, WriteQuota};
use forge_model::{ErrorKind, FieldError, ForgeError, OverlayManifest};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use wasmtime_wasi::FsPerms;

/// A mount as one overlay sees it: where it lives on the host, and where the guest finds it.
#[derive(Debug, Clone)]
pub(crate) struct MountedPath {
    host_dir: PathBuf,
    guest_path: String,
    write: bool,
}

/// The manifest's mount grants against the operator's mounts: an unknown mount, or write access to
/// a read-only one, is a validation error naming it.
pub(crate) fn resolve(manifest: &OverlayManifest, mounts: &[Mount]) -> Result<Vec<MountedPath>, ForgeError> {
    let mut errors = Vec::new();
    let mut resolved = Vec::new();
    for grant in manifest.mount_grants() {
        let capability = if grant.write { "file:write" } else { "file:read" };
        match mounts.iter().find(|m| m.name == grant.mount) {
            None => errors.push(FieldError::new(
                "capabilities",
                format!(
                    "`{capability}` names mount `{}`, which this host does not define (defined: {})",
                    grant.mount,
                    defined(mounts)
                ),
            )),
            Some(mount) if grant.write && !mount.writable => errors.push(FieldError::new(
                "capabilities",
                format!("`{capability}` asks to write to mount `{}`, which is read-only", grant.mount),
            )),
            Some(mount) => resolved.push(MountedPath {
                host_dir: mount.dir.clone(),
                guest_path: grant.path,
                write: grant.write,
            }),
        }
    }
    if errors.is_empty() { Ok(resolved) } else { Err(ForgeError::invalid_fields("manifest", errors)) }
}

fn defined(mounts: &[Mount]) -> String {
    if mounts.is_empty() {
        return "none".into();
    }
    mounts.iter().map(|m| format!("`{}`", m.name)).collect::<Vec<_>>().join(", ")
}

/// One WASI preopen: host directory, guest path, permissions.
pub(crate) type Preopen = (PathBuf, String, FsPerms);

/// The file mounts of one call: its preopens, and the staging directories of its writes.
pub(crate) struct CallFiles {
    staged: Vec<(tempfile::TempDir, PathBuf)>,
    preopens: Vec<Preopen>,
}

impl CallFiles {
    /// Creates a staging directory per `file:write` grant.
    pub(crate) fn open(mounted: &[MountedPath]) -> io::Result<CallFiles> {
        let mut files = CallFiles { staged: Vec::new(), preopens: Vec::new() };
        for mount in mounted {
            if mount.write {
                let staging = tempfile::Builder::new().prefix("forge-staging-").tempdir()?;
                files.preopens.push((
                    staging.path().to_owned(),
                    mount.guest_path.clone(),
                    FsPerms::ReadWrite,
                ));
                files.staged.push((staging, mount.host_dir.clone()));
            } else {
                files.preopens.push((mount.host_dir.clone(), mount.guest_path.clone(), FsPerms::ReadOnly));
            }
        }
        Ok(files)
    }

    pub(crate) fn preopens(&self) -> &[Preopen] {
        &self.preopens
    }

    /// Moves what a successful call staged into its mounts, or fails the call (nothing kept) if it
    /// wrote more than `quota` allows. The staging directories are removed either way.
    pub(crate) fn commit(self, quota: WriteQuota) -> Result<(), Abort> {
        let mut staged_files = Vec::new();
        for (staging, target) in &self.staged {
            collect(staging.path(), Path::new(""), target, &mut staged_files).map_err(host_error)?;
        }
        let bytes: u64 = staged_files.iter().map(|f| f.size).sum();
        if staged_files.len() > quota.max_files as usize {
            return Err(Abort::new(
                ErrorKind::OverlayError,
                format!(
                    "the call wrote {} files to file mounts, the limit is {} (max_files_written); none was kept",
                    staged_files.len(),
                    quota.max_files
                ),
            ));
        }
        if bytes > quota.max_bytes {
            return Err(Abort::new(
                ErrorKind::OverlayError,
                format!(
                    "the call wrote {bytes} bytes to file mounts, the limit is {} (max_file_write_bytes); \
                     none was kept",
                    quota.max_bytes
                ),
            ));
        }
        for file in &staged_files {
            file.move_into_place().map_err(host_error)?;
        }
        Ok(())
    }
}

fn host_error(error: io::Error) -> Abort {
    Abort::new(ErrorKind::HostError, format!("cannot write to a file mount: {error}"))
}

/// A regular file a call staged, and where it goes.
struct StagedFile {
    source: PathBuf,
    target: PathBuf,
    size: u64,
}

impl StagedFile {
    /// Copies to a temporary name beside the target, then renames over it: readers of the mount
    /// see the old file or the whole new one.
    fn move_into_place(&self) -> io::Result<()> {
        let parent = self.target.parent().expect("a staged file has a parent in its mount");
        fs::create_dir_all(parent)?;
        let temporary = parent.join(format!(".forge-tmp-{}", uuid::Uuid::new_v4()));
        fs::copy(&self.source, &temporary)?;
        fs::rename(&temporary, &self.target).inspect_err(|_| {
            let _ = fs::remove_file(&temporary);
        })
    }
}

/// Regular files under `dir` (symlinks and other kinds are not followed nor kept).
fn collect(dir: &Path, relative: &Path, target: &Path, out: &mut Vec<StagedFile>) -> io::Result<()> {
    for entry in fs::read_dir(dir.join(relative))? {
        let entry = entry?;
        let relative = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(dir, &relative, target, out)?;
        } else if kind.is_file() {
            out.push(StagedFile {
                source: dir.join(&relative),
                target: target.join(&relative),
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}
