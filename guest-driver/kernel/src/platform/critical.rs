//! Critical sections without `cli`: the STREAMS core's spin locks and the allocator hold
//! interrupt upcalls off on this CPU ([`crate::cpu::irq::mask`]), so a handler never spins on a
//! lock the code it interrupted holds. Other CPUs keep taking interrupts.

use crate::cpu::irq;

struct UpcallMask;

critical_section::set_impl!(UpcallMask);

// SAFETY: `acquire` holds this CPU's upcalls off until the matching `release`; holds nest by
// counting (the restore state is `()`), so out-of-order releases are also safe. Each thread is
// bound to its CPU, so acquire and release run on the same one. Other CPUs are excluded by the
// spin lock the caller takes inside the section.
unsafe impl critical_section::Impl for UpcallMask {
    unsafe fn acquire() {
        irq::mask();
    }
    unsafe fn release(_: ()) {
        irq::unmask();
    }
}
