//! Ring-3 wrappers for the CPL0 stub's privileged services (`ud2` + signature, number in `rax`).
//!
//! Each call traps into the emulated stub: about 50 µs on a PVM host, so keep them off fast paths.

use crate::cpu::stub::{
    SVC_INB, SVC_NOP, SVC_OUTB, SVC_OUTL, SVC_OUTSB, SVC_RDMSR, SVC_WAIT, SVC_WAIT2, SVC_WRMSR,
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Calls service `n` with two arguments; returns its `rax`.
fn call(n: u64, a0: u64, a1: u64) -> u64 {
    let r: u64;
    // SAFETY: the stub recognises this exact byte sequence, runs service `n` with `rdi`/`rsi`,
    // returns in `rax`, preserves every other register and resumes after the `ud2` (the 7-byte
    // nop then executes). It does not touch the user stack. Memory may be read (SVC_WAIT).
    unsafe {
        core::arch::asm!(
            "ud2",
            ".byte 0x0f, 0x1f, 0x80, 0x53, 0x56, 0x00, 0x00",
            inout("rax") n => r,
            in("rdi") a0,
            in("rsi") a1,
            options(nostack),
        );
    }
    r
}

/// Writes a model-specific register.
pub fn wrmsr(msr: u32, value: u64) {
    call(SVC_WRMSR, msr.into(), value);
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    call(SVC_RDMSR, msr.into(), 0)
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    call(SVC_OUTB, port.into(), value.into());
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    call(SVC_OUTL, port.into(), value.into());
}

/// Writes `bytes` to an I/O port with `rep outsb`: one trap for the whole buffer (the VMM
/// still sees one port write per byte).
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: as for `call`, with `rdx` = length; the stub reads `bytes` (identity-mapped,
    // readable at ring 0) and restores `rsi` and `rdx`.
    unsafe {
        core::arch::asm!(
            "ud2",
            ".byte 0x0f, 0x1f, 0x80, 0x53, 0x56, 0x00, 0x00",
            inout("rax") SVC_OUTSB => _,
            in("rdi") u64::from(port),
            in("rsi") bytes.as_ptr(),
            in("rdx") bytes.len(),
            options(nostack, readonly),
        );
    }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    call(SVC_INB, port.into(), 0) as u8
}

/// Halts this vCPU while `*word == value`, re-checked with interrupts off, until an interrupt.
///
/// It may return without the word changing (any interrupt wakes it); callers loop. Interrupts
/// taken during the halt are left pending for [`crate::cpu::irq::run_pending`].
pub fn wait(word: &AtomicU64, value: u64) {
    call(SVC_WAIT, word.as_ptr() as u64, value);
}

/// Halts this vCPU while `*word == value` and `*gen == seen`, both re-checked with interrupts
/// off, until an interrupt. Like [`wait`], it may return early; callers loop.
pub fn wait2(word: &AtomicU32, value: u32, generation: &AtomicU64, seen: u64) {
    // SAFETY: as in `call`; this service also reads `rdx` and `r8` and preserves them.
    unsafe {
        core::arch::asm!(
            "ud2",
            ".byte 0x0f, 0x1f, 0x80, 0x53, 0x56, 0x00, 0x00",
            inout("rax") SVC_WAIT2 => _,
            in("rdi") word.as_ptr() as u64,
            in("rsi") u64::from(value),
            in("rdx") generation.as_ptr() as u64,
            in("r8") seen,
            options(nostack),
        );
    }
}

/// Does nothing at ring 0: measures the cost of a service call.
pub fn nop() {
    call(SVC_NOP, 0, 0);
}

/// Sends a fixed, physical-destination IPI with `vector` to the CPU with x2APIC ID `apic`.
pub fn send_ipi(apic: u32, vector: u8) {
    const X2APIC_ICR: u32 = 0x830;
    const LEVEL_ASSERT: u64 = 1 << 14;
    wrmsr(
        X2APIC_ICR,
        (u64::from(apic) << 32) | LEVEL_ASSERT | u64::from(vector),
    );
}

/// Halts this CPU while `word` holds `value`, running interrupt handlers as they arrive.
///
/// Whoever changes `word` must then interrupt this CPU (an IPI or a device interrupt) for it to
/// notice promptly.
pub fn wait_while(word: &AtomicU64, value: u64) {
    loop {
        crate::cpu::irq::run_pending();
        if word.load(Ordering::Acquire) != value {
            return;
        }
        wait(word, value);
    }
}
