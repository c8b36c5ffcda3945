//! Interrupt upcalls: ring-3 handlers for the vectors the CPL0 stub marks pending.
//!
//! The stub sets a vector's bit in [`PerCpu::pending`](crate::cpu::percpu::PerCpu::pending), sends the
//! EOI and, when ring 3 was running and no upcall is already running on the CPU, diverts ring 3
//! into [`upcall`]. Interrupts taken while the CPU is halted in [`crate::cpu::svc::wait`] stay
//! pending until [`run_pending`] runs them (as [`crate::cpu::svc::wait_while`] does). Handlers run with interrupts enabled on the interrupted thread's
//! stack, so they must not block or take a lock that the interrupted code may hold; later issues'
//! STREAMS platform defers real work onto perimeters from here.
//!
//! Known limit: an interrupt that lands on the return path of an upcall (after `in_upcall` is
//! cleared, before `ret 128`) starts a nested upcall about 1 KiB deeper on the same stack. Each
//! one finishes, but a sustained interrupt storm could deepen the chain; user stacks are 64 KiB
//! and have no guard page.

use crate::cpu::percpu::{PerCpu, this_cpu};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// An interrupt handler: called with the vector, on the CPU that took it.
pub type Handler = fn(u8);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
/// Interrupts that arrived for a vector with no handler.
pub static UNHANDLED: AtomicU64 = AtomicU64::new(0);

/// Installs `handler` for `vector` on every CPU.
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

fn dispatch(pc: &PerCpu) {
    for (word, bits) in pc.pending.iter().enumerate() {
        let mut set = bits.swap(0, Ordering::Acquire);
        while set != 0 {
            let bit = set.trailing_zeros() as usize;
            set &= set - 1;
            let vector = word * 64 + bit;
            pc.irqs.fetch_add(1, Ordering::Relaxed);
            match HANDLERS[vector].load(Ordering::Acquire) {
                0 => {
                    UNHANDLED.fetch_add(1, Ordering::Relaxed);
                }
                f => {
                    // SAFETY: non-zero entries are only ever stored by `set_handler` from a
                    // `Handler`, so `f` is a valid `fn(u8)`.
                    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(f) };
                    handler(vector as u8);
                }
            }
        }
    }
}

fn any_pending(pc: &PerCpu) -> bool {
    pc.pending.iter().any(|w| w.load(Ordering::Relaxed) != 0)
}

/// Runs handlers until nothing is pending, then clears `in_upcall`.
fn drain(pc: &PerCpu) {
    loop {
        dispatch(pc);
        pc.in_upcall.store(0, Ordering::Release);
        // An interrupt after the store upcalls again, nested, and finishes before we go on;
        // one that slipped in before it found `in_upcall` set and only left its bit.
        if !any_pending(pc)
            || pc
                .in_upcall
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
    }
}

/// Entered from the stub's `irq_upcall_entry` at ring 3 with `in_upcall` already set.
pub extern "C" fn upcall() {
    drain(this_cpu());
}

/// Holds interrupt upcalls off on this CPU until the matching [`unmask`]; nests. Interrupts
/// still arrive (the stub counts them and leaves them pending), their handlers just wait. This
/// is what the guest's critical sections (spin locks, the allocator) use instead of `cli`,
/// which ring 3 cannot execute and a service call would make cost ~50 µs.
pub fn mask() {
    // The stub diverts into an upcall only while `in_upcall` is 0: each level adds one.
    this_cpu().in_upcall.fetch_add(1, Ordering::Acquire);
}

/// Ends one [`mask`]; the outermost runs the handlers of what arrived meanwhile.
pub fn unmask() {
    if this_cpu().in_upcall.fetch_sub(1, Ordering::Release) == 1 {
        run_pending();
    }
}

/// Runs the handlers of interrupts left pending (for example, taken while halted).
pub fn run_pending() {
    let pc = this_cpu();
    if any_pending(pc)
        && pc
            .in_upcall
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        drain(pc);
    }
}
