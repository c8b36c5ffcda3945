//! Starting the application processors: the VMM starts every vCPU in long mode at the image's
//! entry with its own index; APs wait here until the bootstrap processor has set up the runtime.

use crate::cpu::svc;
use crate::cpu::svc::wait_while;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::WAKE_VECTOR;

/// Non-zero once the bootstrap processor has set up the heap, clock and handlers.
static READY: AtomicU64 = AtomicU64::new(0);
/// Application processors that have finished their start-up work.
pub static ONLINE: AtomicU64 = AtomicU64::new(0);

/// Lets every AP run (bootstrap processor only).
pub fn release_aps(vcpus: u32) {
    READY.store(1, Ordering::Release);
    for apic in 1..vcpus {
        svc::send_ipi(apic, WAKE_VECTOR);
    }
}

/// Blocks an AP until [`release_aps`].
pub fn wait_until_released() {
    wait_while(&READY, 0);
}

/// Reports this AP as online and wakes the bootstrap processor.
pub fn report_online() {
    ONLINE.fetch_add(1, Ordering::AcqRel);
    svc::send_ipi(0, WAKE_VECTOR);
}

/// Waits (halted) until `n` APs are online.
pub fn wait_for_online(n: u64) {
    loop {
        let seen = ONLINE.load(Ordering::Acquire);
        if seen >= n {
            return;
        }
        wait_while(&ONLINE, seen);
    }
}
