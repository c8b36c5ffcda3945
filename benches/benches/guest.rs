//! Criterion benchmarks end to end under KVM: the built-in guest's STREAMS console driver
//! against the device model, one boot per sample, timed by the guest itself.
//!
//! * `guest/boot-to-exit`: creating the VM, booting, the guest's `exit:0`, tearing down.
//! * `guest/pingpong/64`: one 64-byte round trip through the `echo` port (a boot runs as many
//!   round trips as criterion asks for and reports their total).
//! * `guest/tx/65536`, `guest/rx/65536`: 64 KiB messages into the `null` backend and 64 KiB
//!   receive buffers from the `pattern` backend (the guest checks every received byte).
//!
//! Without `/dev/kvm` it says so and measures nothing. Figures: BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use device_model::console::backend::PortSpec;
use std::time::Duration;
use vmm::vm::{Output, run_with_output};
use vmm::{Kernel, VmConfig};

/// Boots the built-in guest with `workload` on the default ports (console output discarded)
/// and returns its one result's fields.
fn boot(workload: &str) -> Vec<(String, String)> {
    let ports = [
        "console,backend=null,console",
        "echo,backend=echo",
        "sink,backend=null",
        "source,backend=pattern",
    ]
    .iter()
    .map(|p| PortSpec::parse(&format!("name={p}")).expect("valid port"))
    .collect();
    let config = VmConfig {
        kernel: Kernel::Embedded,
        memory_mib: 256,
        cmdline: format!("workload={workload}"),
        timeout: Some(Duration::from_secs(300)),
        ports,
        ..VmConfig::default()
    };
    let sink = || Box::new(std::io::sink()) as Box<dyn std::io::Write + Send>;
    let output = Output {
        out: sink(),
        err: sink(),
        serial: sink(),
    };
    let report = run_with_output(&config, output).expect("the VM runs");
    assert_eq!(
        report.outcome.status(),
        0,
        "{workload}: {:?}",
        report.outcome
    );
    report
        .results
        .into_iter()
        .next()
        .map(|r| r.fields)
        .unwrap_or_default()
}

fn field(fields: &[(String, String)], key: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

fn guest(c: &mut Criterion) {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("\n*** SKIPPED the guest benchmarks: /dev/kvm is missing ***\n");
        return;
    }
    let mut g = c.benchmark_group("guest");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("boot-to-exit", |b| b.iter(|| boot("exit:0")));
    g.bench_function("pingpong/64", |b| {
        b.iter_custom(|iters| {
            let f = boot(&format!("pingpong:64:{iters}"));
            Duration::from_nanos(field(&f, "total_ns"))
        })
    });
    const SIZE: u64 = 65536;
    g.throughput(Throughput::Bytes(SIZE));
    for kind in ["tx", "rx"] {
        g.bench_function(format!("{kind}/{SIZE}"), |b| {
            b.iter_custom(|iters| {
                let f = boot(&format!("{kind}:{SIZE}:{}", iters.max(1) * SIZE));
                Duration::from_nanos(field(&f, "ns"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, guest);
criterion_main!(benches);
