//! A monotonic clock from the TSC (`rdtsc` runs natively at ring 3, even under PVM).

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Sets the TSC frequency the VMM reported.
pub fn init(tsc_khz: u64) {
    TSC_KHZ.store(tsc_khz.max(1), Ordering::Relaxed);
}

/// Raw TSC ticks.
pub fn ticks() -> u64 {
    // SAFETY: rdtsc has no memory effects; CR4.TSD is clear, so ring 3 may run it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks read after every earlier instruction is done (loads included): a value that
/// cannot predate what the code before it saw.
pub fn ticks_ordered() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: lfence and rdtsc have no memory effects; ring 3 may run both (CR4.TSD is clear).
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi,
            options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Converts a tick count into nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed).max(1);
    (u128::from(ticks) * 1_000_000 / u128::from(khz)) as u64
}

/// Nanoseconds since the TSC started (its epoch is arbitrary but fixed).
pub fn now_ns() -> u64 {
    ticks_to_ns(ticks())
}
