//! Receive rings polled by an idle CPU: while a CPU spins before halting (see
//! `platform::PollHooks`), the device is asked for no receive interrupt and the CPU looks at
//! every port's used ring itself. On this machine an interrupt is a VM exit and an emulated
//! ring-0 entry, the largest stage of a small round trip; a CPU that already spins sees the
//! buffer a few hundred nanoseconds after the device returns it.
//!
//! No wake-up is lost: interrupts are asked for again, on every port, before the last polling
//! CPU halts or goes back to work, and a ring that moved meanwhile is serviced (the race
//! `interrupt_after` reports). A receive service that runs while some CPU polls leaves its
//! ring quiet; the ring lock orders it against that CPU's re-arming.
//! `vcon.rxpoll=0` on the command line turns it off.

use super::Vcon;
use core::sync::atomic::{AtomicUsize, Ordering};

/// CPUs polling now.
static POLLERS: AtomicUsize = AtomicUsize::new(0);

fn wanted() -> bool {
    static WANTED: spin::Once<bool> = spin::Once::new();
    *WANTED.call_once(|| crate::cpu::bootinfo::arg("vcon.rxpoll") != Some("0"))
}

/// Whether some CPU polls the receive rings (read under a ring's lock).
pub fn polling() -> bool {
    POLLERS.load(Ordering::SeqCst) > 0
}

/// A CPU starts polling: every receive ring goes quiet.
pub fn start(v: &Vcon) {
    if !wanted() {
        return;
    }
    POLLERS.fetch_add(1, Ordering::SeqCst);
    for rings in &v.rings {
        rings.lock().rx_quiet();
    }
}

/// One turn: rings the doorbell of every port whose receive ring moved; true if one did.
pub fn look(v: &Vcon) -> bool {
    if !wanted() {
        return false;
    }
    let mut found = false;
    for (id, rings) in v.rings.iter().enumerate() {
        if rings.lock().rx_waiting() {
            v.stats.polled.fetch_add(1, Ordering::Relaxed);
            v.ring(id);
            found = true;
        }
    }
    found
}

/// A CPU stops polling; the last one asks for receive interrupts again and services the rings
/// that moved before the device could see that. True if one did.
pub fn stop(v: &Vcon) -> bool {
    if !wanted() || POLLERS.fetch_sub(1, Ordering::SeqCst) != 1 {
        return false;
    }
    let mut found = false;
    for (id, rings) in v.rings.iter().enumerate() {
        let moved = rings.lock().rx_rearm();
        if moved {
            v.ring(id);
            found = true;
        }
    }
    found
}
