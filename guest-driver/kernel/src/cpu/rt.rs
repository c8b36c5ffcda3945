//! The symbols a freestanding image must provide itself: the `mem*` family (the prebuilt
//! `compiler_builtins` for linux-gnu expects libc's) and the unwinding hooks that the prebuilt
//! `core`/`alloc` reference but never call under `panic = "abort"`.

/// Copies `n` bytes; the regions do not overlap.
///
/// # Safety
/// The C `memcpy` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes. `rep movsb` with DF=0
    // (the ABI's state at any call) copies forwards.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes; the regions may overlap.
///
/// # Safety
/// The C `memmove` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: forwards is safe when dst is below src or past its end.
        return unsafe { memcpy(dst, src, n) };
    }
    if n == 0 {
        return dst;
    }
    // SAFETY: dst overlaps the tail of src: copy backwards from the last byte with DF=1, and
    // restore DF=0 (the interrupt upcall also clears DF before calling Rust).
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
    dst
}

/// Fills `n` bytes with `c`.
///
/// # Safety
/// The C `memset` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dst` is valid for `n` bytes.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _,
            in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes.
///
/// # Safety
/// The C `memcmp` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    // Eight bytes at a time while they are equal, then bytes to find the first difference.
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` and both ranges hold `n` bytes; unaligned volatile reads.
        let (x, y) = unsafe {
            (
                (a.add(i) as *const u64).read_unaligned(),
                (b.add(i) as *const u64).read_unaligned(),
            )
        };
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n` and the caller guarantees both ranges hold `n` bytes. Volatile reads
        // keep the compiler from turning this loop back into a call to `memcmp`.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality only.
///
/// # Safety
/// The C `bcmp` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Equality only: 32 bytes per step, differences OR-ed together (no early exit inside a
    // step), then memcmp for the tail.
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n` and both ranges hold `n` bytes; unaligned reads.
        let d = unsafe {
            let (pa, pb) = (a.add(i) as *const u64, b.add(i) as *const u64);
            (pa.read_unaligned() ^ pb.read_unaligned())
                | (pa.add(1).read_unaligned() ^ pb.add(1).read_unaligned())
                | (pa.add(2).read_unaligned() ^ pb.add(2).read_unaligned())
                | (pa.add(3).read_unaligned() ^ pb.add(3).read_unaligned())
        };
        if d != 0 {
            return 1;
        }
        i += 32;
    }
    // SAFETY: same contract as memcmp, on the remaining `n - i` bytes.
    unsafe { memcmp(a.add(i), b.add(i), n - i) }
}

/// Referenced by the prebuilt `core` (built with unwinding); never called with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Referenced by landing pads in the prebuilt `alloc`; unreachable because panics abort.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::exit(guest_abi::EXIT_PANIC)
}
