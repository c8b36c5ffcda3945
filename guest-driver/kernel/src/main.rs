//! perimeter's guest kernel.
//!
//! A CPL0 assembly stub ([`cpu::stub`]) boots each vCPU and drops to ring 3, where all Rust code
//! runs: on PVM hosts ring 0 is emulated (slow, no SSE) while ring 3 runs natively, and the same
//! design runs on hardware KVM. Privileged work goes through `ud2` services ([`cpu::svc`]);
//! interrupts arrive as ring-3 upcalls ([`cpu::irq`]). The VMM describes the machine in a
//! [`guest_abi::BootParams`].
//!
//! | room | what it holds |
//! |---|---|
//! | [`cpu`] | boot and the CPU: the stub, services, upcalls, per-CPU data, APs, PVH, boot parameters, debug output |
//! | [`platform`] | what the STREAMS core runs on: safe points, the idle loop, timers, locks, the heap, the clock |
//! | [`drivers`] | virtio-mmio, the STREAMS virtio-console driver (`vcon`), a virtio-rng probe |
//! | [`workload`] | what the guest does once booted, chosen on the command line |
#![no_std]
#![no_main]

extern crate alloc;

mod cpu;
mod drivers;
mod platform;
mod workload;

use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::{EXIT_PANIC, IRQ_TEST_VECTOR, WAKE_VECTOR, debug, layout::DEBUG_BASE};

/// Ends the guest with `code` through the debug page's EXIT register (after a PVH boot:
/// QEMU's `isa-debug-exit` at port 0xf4, whose process status is `code * 2 + 1`).
pub fn exit(code: u32) -> ! {
    // The write stops the VM: nothing after it runs.
    if cpu::bootinfo::pvh_boot() {
        cpu::svc::outl(0xf4, code);
    } else {
        cpu::mmio::write_u32(DEBUG_BASE + debug::EXIT, code);
    }
    let never = AtomicU64::new(0);
    loop {
        cpu::svc::wait(&never, 0);
    }
}

fn on_test_irq(_vector: u8) {
    cpu::percpu::this_cpu()
        .test_irqs
        .fetch_add(1, Ordering::AcqRel);
}

fn on_wakeup(_vector: u8) {
    cpu::percpu::this_cpu()
        .wakeups
        .fetch_add(1, Ordering::Relaxed);
}

/// Where the stub enters ring 3 on every CPU: `params` from `rdi`, `cpu` from `rsi`.
pub extern "C" fn rust_entry(params: u64, cpu: u64) -> ! {
    if cpu != 0 {
        cpu::smp::wait_until_released();
        workload::ap_main(cpu as usize);
    }
    cpu::bootinfo::init(params);
    let p = cpu::bootinfo::params();
    platform::clock::init(p.tsc_khz);
    platform::heap::init(p.mem_size);
    cpu::irq::set_handler(IRQ_TEST_VECTOR, on_test_irq);
    cpu::irq::set_handler(WAKE_VECTOR, on_wakeup);
    cpu::smp::release_aps(p.vcpus);
    workload::run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    eprintln!(
        "guest panicked on cpu {}: {}",
        cpu::percpu::cpu_index(),
        info
    );
    exit(EXIT_PANIC)
}
