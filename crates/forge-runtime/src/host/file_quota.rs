//! WASI file writes counted against the call's quotas as they happen, so a guest cannot fill the
//! disk before its call ends: `fd_write` / `fd_pwrite` to files and `path_open` with `O_CREAT` are
//! charged first and answered `EDQUOT` once a quota would be passed; otherwise WASI's own function
//! runs. The check at the end of the call (`CallFiles::commit`) stays the backstop for what these
//! do not see (a file grown by `fd_filestat_set_size`, say).

use crate::abi::WASI_MODULE;
use crate::state::{Abort, CallState};
use forge_model::ErrorKind;
use wasmtime::{Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};

/// WASI's `errno::dquot`.
const ERRNO_DQUOT: i32 = 19;
/// WASI's `oflags::creat`.
const OFLAGS_CREAT: i32 = 1;
/// Descriptors 0-2 are stdin, stdout and stderr: output there goes to the log, not to a mount.
const FIRST_FILE_FD: i32 = 3;

/// Shadows the WASI functions that write files with versions that charge the call's quotas first.
pub(super) fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        WASI_MODULE,
        "fd_write",
        |mut caller: Caller<'_, CallState>, (fd, iovs, iovs_len, written): (i32, i32, i32, i32)| {
            Box::new(async move {
                if fd >= FIRST_FILE_FD && !charge_bytes(&mut caller, iovs, iovs_len) {
                    return Ok(ERRNO_DQUOT);
                }
                let (ctx, mut memory) = split(&mut caller)?;
                p1::fd_write(ctx, &mut memory, fd, iovs, iovs_len, written).await
            })
        },
    )?;
    linker.func_wrap_async(
        WASI_MODULE,
        "fd_pwrite",
        |mut caller: Caller<'_, CallState>,
         (fd, iovs, iovs_len, offset, written): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                if fd >= FIRST_FILE_FD && !charge_bytes(&mut caller, iovs, iovs_len) {
                    return Ok(ERRNO_DQUOT);
                }
                let (ctx, mut memory) = split(&mut caller)?;
                p1::fd_pwrite(ctx, &mut memory, fd, iovs, iovs_len, offset, written).await
            })
        },
    )?;
    linker.func_wrap_async(
        WASI_MODULE,
        "path_open",
        |mut caller: Caller<'_, CallState>,
         (dir, lookup, path, path_len, oflags, base, inheriting, fdflags, opened): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                if oflags & OFLAGS_CREAT != 0 {
                    let state = caller.data_mut();
                    if state.file_writes.files >= state.limits.write_quota.max_files {
                        return Ok(ERRNO_DQUOT);
                    }
                    state.file_writes.files += 1;
                }
                let (ctx, mut memory) = split(&mut caller)?;
                p1::path_open(
                    ctx,
                    &mut memory,
                    dir,
                    lookup,
                    path,
                    path_len,
                    oflags,
                    base,
                    inheriting,
                    fdflags,
                    opened,
                )
                .await
            })
        },
    )?;
    Ok(())
}

/// Charges the bytes WASI would write (the first non-empty buffer: WASI writes one per call);
/// false, charging nothing, if that would pass the quota.
fn charge_bytes(caller: &mut Caller<'_, CallState>, iovs: i32, iovs_len: i32) -> bool {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return true; // WASI itself refuses the call then
    };
    let data = memory.data(&*caller);
    let word = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let first_len = (0..iovs_len.max(0) as usize)
        .map_while(|i| word(iovs as u32 as usize + 8 * i + 4))
        .find(|len| *len > 0)
        .unwrap_or(0);
    let state = caller.data_mut();
    let (used, quota) = (&mut state.file_writes, state.limits.write_quota);
    if used.bytes + u64::from(first_len) > quota.max_bytes {
        return false;
    }
    used.bytes += u64::from(first_len);
    true
}

/// The call's WASI context and the guest's memory, as WASI's own functions take them.
fn split<'a>(
    caller: &'a mut Caller<'_, CallState>,
) -> wasmtime::Result<(&'a mut wasmtime_wasi::p1::WasiP1Ctx, wiggle::GuestMemory<'a>)> {
    let fuel = wasmtime::AsContextMut::as_context_mut(&mut *caller).hostcall_fuel();
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(Abort::new(ErrorKind::OverlayError, "the module does not export `memory`").into());
    };
    let (data, state) = memory.data_and_store_mut(caller);
    let ctx = state.wasi();
    ctx.set_hostcall_fuel(fuel);
    Ok((ctx, wiggle::GuestMemory::Unshared(data)))
}
