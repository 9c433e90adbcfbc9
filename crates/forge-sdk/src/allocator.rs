//! The guest's global allocator: the free tail of the module's initial memory first, then Rust's
//! standard allocator.
//!
//! Rust's allocator on `wasm32-unknown-unknown` gets memory only by growing linear memory, even
//! when the initial memory has room past `__heap_base`. Every call runs in a fresh instance, so
//! even a tiny call would grow memory once, and the runtime pays for every growth twice: making the
//! new pages accessible, then resetting them when the instance slot is reused (on a 2-core VM about
//! a third of a small call). Serving allocations from that free tail first lets small calls run
//! without growing memory at all.
//!
//! Memory taken from the tail is released with the instance, which lives for one call; whatever
//! does not fit goes to the standard allocator and is freed as usual. Overlays that want their own
//! global allocator turn off the SDK's `allocator` feature.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

unsafe extern "C" {
    /// Where the linker placed the start of the heap, after the stack and static data.
    static __heap_base: u8;
}

/// Wasm page size.
const PAGE: usize = 65536;

/// The unused tail of the initial memory: `[next, end)`; `end == 0` until first use.
struct Tail {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown guests are single-threaded (no shared memory, no threads).
unsafe impl Sync for Tail {}

static TAIL: Tail = Tail { next: Cell::new(0), end: Cell::new(0) };

pub struct TailFirst;

impl TailFirst {
    /// `[heap base, end of memory)`, as found on first use, when nothing has grown memory yet.
    fn tail() -> &'static Tail {
        if TAIL.end.get() == 0 {
            TAIL.next.set((&raw const __heap_base).addr());
            TAIL.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        &TAIL
    }

    fn owns(ptr: *mut u8) -> bool {
        let tail = Self::tail();
        ((&raw const __heap_base).addr()..tail.end.get()).contains(&ptr.addr())
    }
}

// SAFETY: blocks from the tail are disjoint (a bump pointer only moves forward), aligned as asked,
// inside memory that nothing else uses (the standard allocator only grows memory beyond it), and
// never handed out twice; everything else is the standard allocator's.
unsafe impl GlobalAlloc for TailFirst {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let tail = Self::tail();
        let start = tail.next.get().next_multiple_of(layout.align());
        match start.checked_add(layout.size()) {
            Some(end) if end <= tail.end.get() => {
                tail.next.set(end);
                std::ptr::with_exposed_provenance_mut(start)
            }
            // SAFETY: forwarded as given.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::owns(ptr) {
            // SAFETY: not from the tail, so from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}
