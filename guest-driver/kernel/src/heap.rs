//! The global allocator: one heap from the 2 MiB boundary after the image to the end of RAM.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

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
    // SAFETY: the range lies inside guest RAM (the VMM reports mem_size), above everything the
    // image and the VMM placed in memory, and is handed over once, before any allocation.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    size
}
