//! What the guest does once booted, chosen by `workload=NAME[:ARG]` on the command line.
//!
//! * `selftest` (the default): the `boot` checks, then the STREAMS virtio-console driver opens
//!   every port and, by port name, runs round trips and a stream through `echo`, a
//!   checksummed stream to `sink` and a checked stream from `source` ([`ports::selftest`]);
//!   exits 0 when everything passed, 1 otherwise.
//! * `hello`: prints the banner (what the guest was given) and exits 0: the boot benchmark.
//! * `boot`: every vCPU comes online and takes a test interrupt routed through an
//!   irqfd as MSI; the bootstrap processor reads 64 bytes from the virtio-rng over virtio-mmio,
//!   prints a summary and exits 0.
//! * `echo[:BYTES]`, `tx:SIZE:TOTAL[:PORT]`, `rx:SIZE:TOTAL[:PORT]`,
//!   `pingpong:SIZE:COUNT[:PORT]`, `fairness:PORTS:TOTAL[:SIZE]`, `tx-idle:SIZE:TOTAL[:PORT]`:
//!   see [`ports`]; results as `@result` lines ([`report`]).
//! * `exit:N`: exits with code N.
//! * `panic`: panics (the guest exits with [`EXIT_PANIC`](guest_abi::EXIT_PANIC)).
//! * `fault`: touches unmapped memory at ring 3 (the stub reports a #PF).
//! * `ud`: executes a bare `ud2` (the stub reports a #UD).
//! * `uart`: prints a line through the 8250 at 0x3f8 (port I/O through the stub), exits 0.
//! * `uart-echo:BYTES`: reads BYTES bytes from the 8250 (polling its line status) and writes
//!   each back to it, then says so and exits 0 (the VMM's COM1 input, tested).
//! * `pio-exit:N`: exits with code N through port 0xf4 (for port-I/O guests).
//! * `svc:N`: times N null ring-0 services and prints the median, exits 0.
//! * `hang`: halts forever (for the VMM's `--timeout`).
//! * `vd-echo[:BYTES]`: the crates.io `virtio-drivers` console echoes BYTES (default 1 MiB)
//!   received on port 0 back to the host, then exits 0.
//! * `hostile`: the guest breaks its own virtio-console's rings, registers and control
//!   messages one case at a time and checks that the device holds ([`hostile`]).

mod hostile;
mod ports;
mod report;
mod stages;
mod stream_io;
mod vd_echo;

use crate::cpu::debug_out::COM1;
use crate::cpu::percpu::{PERCPU, this_cpu};
use crate::cpu::svc::wait_while;
use crate::cpu::{bootinfo, smp, svc};
use crate::platform::clock;
use crate::println;
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
    crate::cpu::mmio::write_u32(DEBUG_BASE + debug::IRQ_TEST, cpu as u32);
    wait_while(&pc.test_irqs, before);
    clock::ticks_to_ns(clock::ticks() - t0)
}

/// Runs on each application processor after it is released.
pub fn ap_main(cpu: usize) -> ! {
    APIC_ID[cpu].store(svc::rdmsr(X2APIC_ID), Ordering::Relaxed);
    IRQ_LATENCY_NS[cpu].store(test_interrupt(cpu), Ordering::Release);
    smp::report_online();
    // Interrupts routed here and the STREAMS work they queue run in this CPU's idle loop.
    crate::platform::idle_forever()
}

/// Median of `n` test-interrupt round trips on CPU 0: an ioeventfd write, the VMM's relay
/// thread, an irqfd, the MSI and the ring-3 handler. The floor of any virtio round trip here.
/// 0 after a PVH boot (QEMU has no debug page to ask).
pub fn doorbell_floor_ns(n: usize) -> u64 {
    if bootinfo::pvh_boot() {
        return 0;
    }
    let mut ns: alloc::vec::Vec<u64> = (0..n.max(1)).map(|_| test_interrupt(0)).collect();
    report::percentiles(&mut ns).0
}

/// Parses `a:b[:c]` numbers of a workload's argument, with a clear panic when malformed.
fn num<T: core::str::FromStr>(workload: &str, what: &str, v: Option<&str>) -> T {
    let v = v.unwrap_or_else(|| panic!("workload {workload} needs {what}"));
    let n = guest_abi::workload::parse_size(v).unwrap_or_else(|| {
        panic!("workload {workload}: {what} {v:?} is not a number (or is too large)")
    });
    alloc::format!("{n}")
        .parse()
        .unwrap_or_else(|_| panic!("workload {workload}: {what} {v:?} is out of range"))
}

/// Runs a workload on the console's ports and exits 0, or prints why it failed and exits 1.
fn port_workload(name: &str, arg: &str) -> ! {
    let mut a = arg.split(':');
    let (first, second, port) = (a.next().filter(|s| !s.is_empty()), a.next(), a.next());
    let (s, v) = ports::setup();
    let r = match name {
        "echo" => ports::echo(v, first.map(|b| num(name, "BYTES", Some(b)))),
        "tx" => ports::tx(
            s,
            v,
            num(name, "SIZE", first),
            num(name, "TOTAL", second),
            port.unwrap_or("sink"),
        ),
        "rx" => ports::rx(
            v,
            num(name, "SIZE", first),
            num(name, "TOTAL", second),
            port.unwrap_or("source"),
        ),
        "pingpong" => ports::pingpong(
            s,
            v,
            num(name, "SIZE", first),
            num(name, "COUNT", second),
            port.unwrap_or("echo"),
            true,
        ),
        "fairness" => ports::fairness(
            s,
            v,
            num(name, "PORTS", first),
            num(name, "TOTAL", second),
            port.map_or(4096, |p| num(name, "SIZE", Some(p))),
        ),
        "tx-idle" => ports::tx_idle(
            s,
            v,
            num(name, "SIZE", first),
            num(name, "TOTAL", second),
            port.unwrap_or("sink"),
        ),
        _ => unreachable!("dispatched by name"),
    };
    match r {
        Ok(()) => crate::exit(0),
        Err(e) => {
            println!("{name}: {e}");
            crate::exit(1)
        }
    }
}

/// Runs on the bootstrap processor.
pub fn run() -> ! {
    let spec = bootinfo::arg("workload").unwrap_or("selftest");
    // The VMM checked it already; a guest booted some other way gets the same answer.
    if let Err(e) = guest_abi::workload::check(spec) {
        panic!("workload {spec:?}: {e}");
    }
    let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
    match name {
        "selftest" => selftest(),
        "hello" => {
            banner();
            crate::exit(0)
        }
        "boot" => {
            boot_checks();
            println!("boot: ok");
            crate::exit(0)
        }
        "echo" | "tx" | "rx" | "pingpong" | "fairness" | "tx-idle" => port_workload(name, arg),
        "exit" => crate::exit(num(name, "N", Some(arg))),
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
        "uart-echo" => uart_echo(num(name, "BYTES", Some(arg))),
        "pio-exit" => {
            svc::outl(0xf4, num(name, "N", Some(arg)));
            panic!("port 0xf4 did not end the run");
        }
        "svc" => svc_cost(match arg {
            "" => 100,
            n => num(name, "N", Some(n)),
        }),
        "vd-echo" => vd_echo::echo(match arg {
            "" => 1 << 20,
            n => num(name, "BYTES", Some(n)),
        }),
        "hostile" => hostile::run(),
        "hang" => {
            let never = AtomicU64::new(0);
            loop {
                wait_while(&never, 0);
            }
        }
        other => panic!("unknown workload {other:?}"),
    }
}

fn selftest() -> ! {
    boot_checks();
    let (s, v) = ports::setup();
    let ok = ports::selftest(s, v);
    println!("selftest: {}", if ok { "ok" } else { "FAILED" });
    crate::exit(if ok { 0 } else { 1 })
}

/// The first line: what the guest was given. The boot benchmarks time its first byte.
fn banner() {
    let p = bootinfo::params();
    println!(
        "perimeter guest: {} vCPU(s), {} MiB RAM, TSC {} kHz, {} MMIO device(s){}",
        p.vcpus,
        p.mem_size >> 20,
        p.tsc_khz,
        p.mmio_count,
        if bootinfo::pvh_boot() {
            ", PVH boot"
        } else {
            ""
        }
    );
    if !bootinfo::cmdline().is_empty() {
        println!("cmdline: {}", bootinfo::cmdline());
    }
}

/// Every vCPU online with a test interrupt, and a virtio-rng request: printed as lines.
fn boot_checks() {
    let p = bootinfo::params();
    let vcpus = p.vcpus as usize;
    banner();
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
    match crate::drivers::virtio_rng::probe() {
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
}

const X2APIC_ID: u32 = 0x802;

fn uart() -> ! {
    for &b in b"hello from COM1\n" {
        // Wait for the transmitter holding register to empty (LSR bit 5).
        while svc::inb(COM1 + 5) & 0x20 == 0 {}
        svc::outb(COM1, b);
    }
    crate::exit(0)
}

fn uart_echo(total: u64) -> ! {
    const DATA_READY: u8 = 0x01;
    const THR_EMPTY: u8 = 0x20;
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..total {
        while svc::inb(COM1 + 5) & DATA_READY == 0 {
            core::hint::spin_loop();
        }
        let b = svc::inb(COM1);
        crc.update(&[b]);
        while svc::inb(COM1 + 5) & THR_EMPTY == 0 {}
        svc::outb(COM1, b);
    }
    println!(
        "uart-echo: {total} bytes echoed, crc32 {:#010x}",
        crc.finalize()
    );
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
