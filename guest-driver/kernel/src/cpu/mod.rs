//! Boot and the CPU: what runs before and beneath everything else.
//!
//! | part | what it holds |
//! |---|---|
//! | [`stub`] | CPL0: per-CPU TSS/GDT/IDT, x2APIC, the drop to ring 3, interrupt stubs, `ud2` services, fault reports |
//! | [`svc`] | ring-3 wrappers of those services: MSRs, port I/O, race-free waits, IPIs |
//! | [`irq`] | ring-3 interrupt handlers run by upcalls and after waits; holding upcalls off |
//! | [`percpu`] | per-CPU data through GS |
//! | [`smp`] | application processors wait until the bootstrap processor set up the runtime |
//! | [`bootinfo`] | the boot parameters and command line the VMM gave |
//! | [`pvh`] | QEMU's PVH start info translated into boot parameters |
//! | [`mmio`] | device register writes that order earlier stores |
//! | [`debug_out`] | `println!`/`eprintln!` through the debug page (COM1 after a PVH boot) |
//! | [`rt`] | the `mem*` and unwinding symbols a freestanding image provides itself |

pub mod bootinfo;
pub mod debug_out;
pub mod irq;
pub mod mmio;
pub mod percpu;
pub mod pvh;
pub mod rt;
pub mod smp;
pub mod stub;
pub mod svc;
