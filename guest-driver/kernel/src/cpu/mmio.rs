//! Writes to device registers, as compiler barriers.
//!
//! A volatile store only promises to write its own address: the compiler may still sink or drop
//! ordinary stores to a buffer whose address the register write hands to the VMM (the console
//! lost the tail of its last line that way). Inline assembly without `nomem` is assumed to read
//! and write any memory the program has exposed, so every earlier store is done first.

/// Writes a 32-bit register at `addr`.
pub fn write_u32(addr: u64, value: u32) {
    // SAFETY: callers pass a device register in the identity-mapped MMIO hole; the store has no
    // effect on guest memory beyond what the device does with it, which the VMM finishes before
    // the vCPU resumes (or an ioeventfd consumes).
    unsafe {
        core::arch::asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value,
            options(nostack, preserves_flags));
    }
}

/// Writes a 64-bit register at `addr`; `uses` is memory the device will read (kept alive and
/// written before the store).
pub fn write_u64(addr: u64, value: u64, uses: *const u8) {
    // SAFETY: as for `write_u32`; `uses` is only passed so that the compiler treats the
    // buffer as read by the assembly.
    unsafe {
        core::arch::asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value,
            in("r11") uses, options(nostack, preserves_flags));
    }
}

/// Reads a 32-bit register at `addr`.
pub fn read_u32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: as for `write_u32`; a device register read has no effect on guest memory.
    unsafe {
        core::arch::asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v,
            options(nostack, preserves_flags));
    }
    v
}
