//! Guest memory handed across the ABI: `forge_alloc`, and taking buffers back from the host.
//!
//! The host writes into guest memory only at addresses the guest handed out through `forge_alloc`:
//! the invocation's arguments before an entry point runs, and every host function's response. The
//! SDK records each allocation it hands out, so that when an address comes back (as an entry
//! point's `(ptr, len)` or a host function's packed result) it rebuilds the buffer from its own
//! record, never from a length alone. An address it did not hand out, or a length longer than the
//! allocation, is refused instead of read.
//!
//! Every call runs in a fresh instance (docs/abi.md, "One call"), so the records never pile up;
//! results are leaked on purpose for the same reason: the host copies them out and drops the
//! instance.

use std::cell::RefCell;

/// One buffer handed to the host: its start and capacity. The pointer (not a bare address) is
/// kept so the rebuilt `Vec` carries the allocation's provenance.
struct Allocation {
    ptr: *mut u8,
    capacity: usize,
}

thread_local! {
    // Wasm guests are single-threaded; on native targets (tests) each thread has its own records.
    static ALLOCATIONS: RefCell<Vec<Allocation>> = const { RefCell::new(Vec::new()) };
}

/// Allocates `size` bytes for the host to write into and records them; `None` if memory is
/// exhausted (the ABI's `forge_alloc` then returns 0 and the host fails the call cleanly).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn alloc(size: usize) -> Option<*mut u8> {
    let mut buffer: Vec<u8> = Vec::new();
    // try_reserve rather than with_capacity: running out of memory must not abort the guest.
    buffer.try_reserve_exact(size).ok()?;
    let mut buffer = std::mem::ManuallyDrop::new(buffer);
    let allocation = Allocation { ptr: buffer.as_mut_ptr(), capacity: buffer.capacity() };
    let ptr = allocation.ptr;
    ALLOCATIONS.with_borrow_mut(|all| all.push(allocation));
    Some(ptr)
}

/// Takes back a buffer that [`alloc`] handed out and the host filled with `len` bytes.
///
/// Returns `None` (and leaves memory untouched) unless `addr` is the start of a live allocation at
/// least `len` bytes long. Each allocation can be taken once.
pub(crate) fn take(addr: usize, len: usize) -> Option<Vec<u8>> {
    let allocation = ALLOCATIONS.with_borrow_mut(|all| {
        let index = all.iter().position(|a| a.ptr.addr() == addr && len <= a.capacity)?;
        Some(all.swap_remove(index))
    })?;
    // SAFETY: `ptr` and `capacity` are exactly those of a `Vec<u8>` that `alloc` created with the
    // global allocator and forgot, and the record was removed above, so this is the only owner.
    // `len <= capacity` was checked. The ABI requires the host to have written the first `len`
    // bytes before handing the address back (and bytes of wasm linear memory are always
    // initialised), so the first `len` elements are initialised.
    Some(unsafe { Vec::from_raw_parts(allocation.ptr, len, allocation.capacity) })
}

/// Leaks `bytes` and packs their address and length as `(ptr << 32) | len` for the host.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn leak_packed(bytes: Vec<u8>) -> i64 {
    let bytes = bytes.leak();
    pack(bytes.as_ptr().addr(), bytes.len())
}

/// `(ptr << 32) | len`, the ABI's packing of a buffer into one `i64`. On wasm32 both halves are
/// 32-bit; on native targets (tests only) the address is truncated and the value is meaningless.
pub(crate) fn pack(addr: usize, len: usize) -> i64 {
    (((addr as u64) << 32) | (len as u64 & 0xffff_ffff)) as i64
}

/// The inverse of [`pack`]: `(addr, len)`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn unpack(packed: i64) -> (usize, usize) {
    let packed = packed as u64;
    ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
}

/// The ABI's `forge_alloc(size: i32) -> i32`: `size` writable bytes, or 0 on failure.
///
/// Defined once here, in the SDK: an exported `#[no_mangle]` function of a dependency is exported
/// from the final cdylib on both wasm targets, so every overlay gets it without writing it.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn forge_alloc(size: i32) -> i32 {
    let Ok(size) = usize::try_from(size) else { return 0 };
    // Addresses on wasm32 fit in 32 bits; the i32 is just the ABI's spelling of them.
    alloc(size).map_or(0, |ptr| ptr.addr() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_with_what_was_written() {
        let ptr = alloc(5).unwrap();
        // SAFETY: alloc handed out 5 writable bytes at ptr.
        unsafe { ptr.copy_from_nonoverlapping(b"hello".as_ptr(), 5) };
        assert_eq!(take(ptr.addr(), 5).unwrap(), b"hello");
        assert!(take(ptr.addr(), 5).is_none(), "taken twice");
    }

    #[test]
    fn a_shorter_length_is_fine_and_a_longer_one_is_refused() {
        let ptr = alloc(4).unwrap();
        assert!(take(ptr.addr(), 5).is_none());
        // SAFETY: alloc handed out 4 writable bytes at ptr.
        unsafe { ptr.copy_from_nonoverlapping(b"ab".as_ptr(), 2) };
        assert_eq!(take(ptr.addr(), 2).unwrap(), b"ab");
    }

    #[test]
    fn unknown_addresses_are_refused() {
        assert!(take(0, 0).is_none());
        assert!(take(12345, 1).is_none());
        let ptr = alloc(8).unwrap();
        assert!(take(ptr.addr() + 1, 1).is_none(), "an interior address is not an allocation");
    }

    #[test]
    fn zero_sized_allocations_work() {
        let ptr = alloc(0).unwrap();
        assert!(!ptr.is_null());
        assert_eq!(take(ptr.addr(), 0).unwrap(), b"");
    }

    #[test]
    fn impossible_sizes_fail_instead_of_aborting() {
        assert!(alloc(usize::MAX).is_none());
    }

    #[test]
    fn packing_round_trips() {
        assert_eq!(unpack(pack(0x1234, 0x10)), (0x1234, 0x10));
        assert_eq!(unpack(pack(0xffff_fff0, 0xffff_ffff)), (0xffff_fff0, 0xffff_ffff));
        assert_eq!(pack(0, 0), 0);
        assert_eq!(pack(1, 2), (1 << 32) | 2);
    }
}
