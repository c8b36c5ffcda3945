//! Per-CPU data, found through the GS base the CPL0 stub sets on each CPU.

use core::sync::atomic::AtomicU64;
use guest_abi::MAX_VCPUS;

/// One CPU's data. The first three fields are also written by the CPL0 stub (offsets below).
#[repr(C, align(128))]
pub struct PerCpu {
    /// Vectors the stub has seen and ring 3 has not handled yet (a 256-bit set).
    pub pending: [AtomicU64; 4],
    /// Non-zero while a ring-3 upcall runs on this CPU; the stub sets it, [`crate::cpu::irq`] clears it.
    pub in_upcall: AtomicU64,
    /// Interrupts handled on this CPU.
    pub irqs: AtomicU64,
    /// Test interrupts ([`guest_abi::IRQ_TEST_VECTOR`]) handled on this CPU.
    pub test_irqs: AtomicU64,
    /// Wake-up IPIs handled on this CPU.
    pub wakeups: AtomicU64,
    /// This CPU's index; written once by the stub.
    pub index: AtomicU64,
}

/// Offset of [`PerCpu::pending`] for the stub.
pub const PERCPU_PENDING: usize = core::mem::offset_of!(PerCpu, pending);
/// Offset of [`PerCpu::in_upcall`] for the stub.
pub const PERCPU_IN_UPCALL: usize = core::mem::offset_of!(PerCpu, in_upcall);
/// Offset of [`PerCpu::index`] for the stub.
pub const PERCPU_INDEX: usize = core::mem::offset_of!(PerCpu, index);
/// Distance between two CPUs' data.
pub const PERCPU_SIZE: usize = core::mem::size_of::<PerCpu>();

#[allow(clippy::declare_interior_mutable_const)]
const INIT: PerCpu = PerCpu {
    pending: [const { AtomicU64::new(0) }; 4],
    in_upcall: AtomicU64::new(0),
    irqs: AtomicU64::new(0),
    test_irqs: AtomicU64::new(0),
    wakeups: AtomicU64::new(0),
    index: AtomicU64::new(0),
};

/// Every CPU's data; CPU `i`'s GS base is `&PERCPU[i]`.
#[unsafe(no_mangle)]
pub static PERCPU: [PerCpu; MAX_VCPUS] = [INIT; MAX_VCPUS];

/// The index of the CPU this runs on.
pub fn cpu_index() -> usize {
    let cpu: usize;
    // SAFETY: the stub set this CPU's GS base to `&PERCPU[cpu]` and stored `cpu` in its `index`
    // field before entering ring 3; nothing changes GS afterwards. The read has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {cpu}, gs:[{index}]",
            cpu = out(reg) cpu,
            index = const PERCPU_INDEX,
            options(nostack, readonly, preserves_flags),
        );
    }
    cpu
}

/// This CPU's data.
pub fn this_cpu() -> &'static PerCpu {
    &PERCPU[cpu_index()]
}
