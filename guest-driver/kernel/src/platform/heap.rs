//! The global allocator: one heap from the 2 MiB boundary after the image to the end of RAM.
//!
//! Talc keeps free chunks in size bins, so an allocation or a free costs the same however
//! many chunks are free. A first-fit list (what the heap was before) walks its free chunks on
//! every call: with 16 ports' transmit buffers returned out of order it held thousands, and
//! the guest spent half of a many-port run in the allocator.

use core::alloc::{GlobalAlloc, Layout};
use talc::{ErrOnOom, Span, Talc, Talck};

/// The heap's spin lock, taken with interrupt upcalls held off on this CPU: a handler that
/// allocates (a STREAMS `put` does) must not spin on the lock the interrupted code holds.
struct Heap(Talck<spin::Mutex<()>, ErrOnOom>);

// SAFETY: forwards to `Talck`, which is a correct allocator; the mask only delays
// interrupt handlers on this CPU.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        crate::cpu::irq::mask();
        // SAFETY: forwarded from the caller.
        let p = unsafe { self.0.alloc(layout) };
        crate::cpu::irq::unmask();
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        crate::cpu::irq::mask();
        // SAFETY: forwarded from the caller.
        unsafe { self.0.dealloc(ptr, layout) };
        crate::cpu::irq::unmask();
    }
}

#[global_allocator]
static HEAP: Heap = Heap(Talc::new(ErrOnOom).lock());
static SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Bytes the heap was given.
pub fn size() -> usize {
    SIZE.load(core::sync::atomic::Ordering::Relaxed)
}

unsafe extern "C" {
    static __heap_start: u8;
}

/// Hands `[__heap_start, mem_size)` to the allocator; returns its size in bytes.
///
/// Panics (before any allocation exists) when RAM ends below the heap's start.
pub fn init(mem_size: u64) -> usize {
    let start = &raw const __heap_start as usize;
    let size = (mem_size as usize)
        .checked_sub(start)
        .filter(|&s| s >= 1 << 20)
        .unwrap_or_else(|| {
            panic!("RAM ({mem_size:#x}) ends before heap start + 1 MiB ({start:#x})")
        });
    let span = Span::from_base_size(start as *mut u8, size);
    // SAFETY: the range lies inside guest RAM (the VMM reports mem_size), above everything the
    // image and the VMM placed in memory, and is handed over once, before any allocation.
    let claimed = unsafe { HEAP.0.lock().claim(span) };
    // Talc refuses only a span too small for its bookkeeping; the heap has at least 1 MiB.
    claimed.expect("the heap holds the allocator's bookkeeping");
    SIZE.store(size, core::sync::atomic::Ordering::Relaxed);
    size
}
