//! What the guest does once booted, chosen by `workload=NAME[:ARG]` on the command line.
//!
//! * `boot` (the default): every vCPU comes online and takes a test interrupt routed through an
//!   irqfd as MSI; the bootstrap processor reads 64 bytes from the virtio-rng over virtio-mmio,
//!   prints a summary and exits 0.
//! * `exit:N`: exits with code N.
//! * `panic`: panics (the guest exits with [`EXIT_PANIC`](guest_abi::EXIT_PANIC)).
//! * `fault`: touches unmapped memory at ring 3 (the stub reports a #PF).
//! * `ud`: executes a bare `ud2` (the stub reports a #UD).
//! * `uart`: prints a line through the 8250 at 0x3f8 (port I/O through the stub), exits 0.
//! * `pio-exit:N`: exits with code N through port 0xf4 (for port-I/O guests).
//! * `svc:N`: times N null ring-0 services and prints the median, exits 0.
//! * `hang`: halts forever (for the VMM's `--timeout`).
//! * `vd-echo[:BYTES]`: the crates.io `virtio-drivers` console echoes BYTES (default 1 MiB)
//!   received on port 0 back to the host, then exits 0.

use crate::irq::wait_while;
use crate::percpu::{PERCPU, this_cpu};
use crate::{bootinfo, clock, println, smp, svc};
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::{debug, layout::DEBUG_BASE};

/// Per-CPU x2APIC ID as the CPU itself reads it.
static APIC_ID: [AtomicU64; guest_abi::MAX_VCPUS] =
    [const { AtomicU64::new(u64::MAX) }; guest_abi::MAX_VCPUS];

/// Per-CPU test-interrupt latency in ns (0: not measured).
static IRQ_LATENCY_NS: [AtomicU64; guest_abi::MAX_VCPUS] =
    [const { AtomicU64::new(0) }; guest_abi::MAX_VCPUS];

/// Asks the host for a test interrupt on this CPU and waits for it; returns the round trip.
fn test_interrupt(cpu: usize) -> u64 {
    let pc = this_cpu();
    let before = pc.test_irqs.load(Ordering::Acquire);
    let t0 = clock::ticks();
    // Reaches an ioeventfd (datamatch `cpu`): no exit to the VMM's vCPU thread.
    crate::mmio::write_u32(DEBUG_BASE + debug::IRQ_TEST, cpu as u32);
    wait_while(&pc.test_irqs, before);
    clock::ticks_to_ns(clock::ticks() - t0)
}

/// Runs on each application processor after it is released.
pub fn ap_main(cpu: usize) -> ! {
    APIC_ID[cpu].store(svc::rdmsr(X2APIC_ID), Ordering::Relaxed);
    IRQ_LATENCY_NS[cpu].store(test_interrupt(cpu), Ordering::Release);
    smp::report_online();
    let idle = AtomicU64::new(0);
    loop {
        wait_while(&idle, 0);
    }
}

/// Runs on the bootstrap processor.
pub fn run() -> ! {
    let spec = bootinfo::arg("workload").unwrap_or("boot");
    let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
    match name {
        "boot" => boot(),
        "exit" => match arg.parse::<u32>() {
            Ok(code) => crate::exit(code),
            Err(_) => panic!("workload exit needs a number, got {arg:?}"),
        },
        "panic" => panic!("the panic workload panics on purpose"),
        "fault" => {
            // SAFETY: deliberately not safe: the address is outside the identity map, so the
            // read faults and the stub reports it; nothing after it runs.
            let v = unsafe { core::ptr::read_volatile(0x10_0000_0000 as *const u64) };
            panic!("read of unmapped memory returned {v}");
        }
        "ud" => {
            // SAFETY: raises #UD, which the stub reports as a crash; nothing after it runs.
            unsafe { core::arch::asm!("ud2", options(noreturn)) }
        }
        "uart" => uart(),
        "pio-exit" => {
            svc::outl(0xf4, arg.parse().unwrap_or(0));
            panic!("port 0xf4 did not end the run");
        }
        "svc" => svc_cost(arg.parse().unwrap_or(100)),
        "vd-echo" => crate::vd_console::echo(match arg {
            "" => 1 << 20,
            n => n
                .parse()
                .unwrap_or_else(|_| panic!("workload vd-echo needs a byte count, got {n:?}")),
        }),
        "hang" => {
            let never = AtomicU64::new(0);
            loop {
                wait_while(&never, 0);
            }
        }
        other => panic!("unknown workload {other:?}"),
    }
}

fn boot() -> ! {
    let p = bootinfo::params();
    let vcpus = p.vcpus as usize;
    // First output as early as possible: the boot benchmark times it.
    println!(
        "perimeter guest: {} vCPU(s), {} MiB RAM, TSC {} kHz, {} MMIO device(s)",
        vcpus,
        p.mem_size >> 20,
        p.tsc_khz,
        p.mmio_count
    );
    println!("cmdline: {}", bootinfo::cmdline());
    APIC_ID[0].store(svc::rdmsr(X2APIC_ID), Ordering::Relaxed);
    IRQ_LATENCY_NS[0].store(test_interrupt(0), Ordering::Release);
    smp::wait_for_online(vcpus as u64 - 1);
    for (cpu, pc) in PERCPU.iter().enumerate().take(vcpus) {
        println!(
            "cpu {cpu}: online, x2APIC ID {}, test irq {} us, irqs {}",
            APIC_ID[cpu].load(Ordering::Relaxed),
            IRQ_LATENCY_NS[cpu].load(Ordering::Acquire) / 1000,
            pc.irqs.load(Ordering::Relaxed)
        );
    }
    match crate::virtio_rng::probe() {
        Ok(r) => println!(
            "virtio-rng: {} bytes ({}), notify to interrupt {} us, MSI vector {:#x}",
            r.len,
            if r.nonzero {
                "not all zero"
            } else {
                "ALL ZERO"
            },
            r.round_trip_ns / 1000,
            r.vector
        ),
        Err(e) => panic!("virtio-rng probe failed: {e}"),
    }
    println!("boot: ok");
    crate::exit(0)
}

const X2APIC_ID: u32 = 0x802;
const COM1: u16 = 0x3f8;

fn uart() -> ! {
    for &b in b"hello from COM1\n" {
        // Wait for the transmitter holding register to empty (LSR bit 5).
        while svc::inb(COM1 + 5) & 0x20 == 0 {}
        svc::outb(COM1, b);
    }
    crate::exit(0)
}

fn svc_cost(n: usize) -> ! {
    let mut ns = alloc::vec::Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let t0 = clock::now_ns();
        svc::nop();
        ns.push(clock::now_ns() - t0);
    }
    ns.sort_unstable();
    println!(
        "svc: {} null services, median {} ns, min {} ns",
        ns.len(),
        ns[ns.len() / 2],
        ns[0]
    );
    crate::exit(0)
}
