//! `perimeter bench` end to end under KVM, and the same guest image under QEMU (its PVH entry,
//! virtio_mmio.device= discovery, QEMU's virtio-serial ports).

mod common;

use common::{kvm_present, perimeter, status, text, tmp_dir};
use std::path::Path;

/// `qemu-system-x86_64` on PATH (found as `perimeter bench` finds it); without it the QEMU test
/// says so loudly and skips, unless `PERIMETER_REQUIRE_QEMU` is set (as `.ci/run` does after
/// installing it), where it fails.
fn qemu_present(test: &str) -> bool {
    let found = vmm::bench::find_qemu(None).is_ok();
    if !found {
        assert!(
            std::env::var_os("PERIMETER_REQUIRE_QEMU").is_none(),
            "{test}: PERIMETER_REQUIRE_QEMU is set but qemu-system-x86_64 is not on PATH"
        );
        eprintln!(
            "\n*** SKIPPED {test}: qemu-system-x86_64 is missing \
             (sudo apt-get install qemu-system-x86) ***\n"
        );
    }
    found
}

fn results(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// The figures of `vmm` in the row named `cell`.
fn figures<'a>(doc: &'a serde_json::Value, cell: &str, vmm: &str) -> &'a serde_json::Value {
    let row = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == cell)
        .unwrap_or_else(|| panic!("no row {cell}: {doc}"));
    row["vmms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["vmm"] == vmm)
        .unwrap()
}

#[test]
fn bench_writes_a_table_json_and_plots_and_checks_every_byte() {
    if !kvm_present("bench_writes_a_table_json_and_plots_and_checks_every_byte") {
        return;
    }
    let dir = tmp_dir("bench");
    let out = dir.join("results");
    let o = perimeter(&[
        "bench",
        "--quick",
        "--only",
        "boot",
        "--only",
        "tx 4 KiB",
        "--only",
        "pingpong 64 B",
        "--only",
        "rx 64 KiB",
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = text(&o.stdout);
    assert_eq!(status(&o), 0, "{table}\n{}", text(&o.stderr));
    for row in [
        "boot",
        "tx 4 KiB",
        "tx 4 KiB x4 ports",
        "pingpong 64 B",
        "rx 64 KiB",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(row)),
            "no {row}: {table}"
        );
    }
    let doc = results(&out);
    for cell in [
        "tx 4 KiB",
        "tx 4 KiB x16 ports",
        "rx 64 KiB",
        "pingpong 64 B",
    ] {
        let f = figures(&doc, cell, "perimeter");
        assert_eq!(f["delivered_ratio"], 1.0, "{cell}: {f}");
        assert_eq!(f["problems"].as_array().unwrap().len(), 0, "{cell}: {f}");
    }
    assert!(
        figures(&doc, "boot", "perimeter")["first_byte_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(doc["schema"], 2, "results.json says its layout");
    assert!(doc["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(
        doc["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
    );
    let pingpong = figures(&doc, "pingpong 64 B", "perimeter");
    let latency = pingpong["latency_us"].as_object().unwrap();
    assert_eq!(latency.len(), 9, "{pingpong}");
    assert!(latency["p99_us"].as_f64().unwrap() >= latency["median_us"].as_f64().unwrap());
    let stages = pingpong["stages_us"].as_object().unwrap();
    assert_eq!(
        stages.len(),
        8,
        "seven stages and the round trip: {pingpong}"
    );
    assert!(stages.contains_key("round_trip_us"));
    // Every round trip of every run, pooled: as many as the runs made.
    let hist = pingpong["latency_hist"].as_array().unwrap();
    let pooled: u64 = hist.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    let runs = pingpong["runs"].as_array().unwrap().len() as u64;
    let count = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pingpong 64 B")
        .unwrap()["cell"]["amount"]
        .as_u64()
        .unwrap();
    assert_eq!(pooled, runs * count, "{pingpong}");
    assert!(table.contains("perimeter round trip, us"), "{table}");
    // Pinned where a CPU is left over for everything but the vCPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 {
        assert_eq!(
            doc["pinned"]["vcpus"].as_array().map(Vec::len),
            Some(1),
            "{doc}"
        );
        assert!(
            table.contains("pinned: perimeter's vCPU thread(s) alone"),
            "{table}"
        );
    } else {
        assert!(doc["pinned"].is_null());
        assert!(table.contains("not pinned"), "{table}");
    }
    for plot in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("perimeter"),
            "{plot}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_refuses_what_it_cannot_do() {
    let dir = tmp_dir("bench-bad");
    let out = dir.join("r");
    let o = perimeter(&[
        "bench",
        "--only",
        "no such cell",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status(&o), 120, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no cell matches"),
        "{}",
        text(&o.stderr)
    );
    let o = perimeter(&[
        "bench",
        "--vs-qemu",
        "--qemu",
        "/nonexistent/qemu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status(&o), 120, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("/nonexistent/qemu"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_same_guest_runs_under_qemu_and_ours_loses_nothing_under_a_slow_reader() {
    let test = "the_same_guest_runs_under_qemu_and_ours_loses_nothing_under_a_slow_reader";
    if !kvm_present(test) || !qemu_present(test) {
        return;
    }
    let dir = tmp_dir("bench-qemu");
    let out = dir.join("results");
    let o = perimeter(&[
        "bench",
        "--vs-qemu",
        "--quick",
        "--only",
        "boot",
        "--only",
        "tx 4 KiB x16",
        "--only",
        "rx 4 KiB",
        "--only",
        "pingpong 64 B",
        "--only",
        "slow reader",
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = text(&o.stdout);
    assert_eq!(status(&o), 0, "{table}\n{}", text(&o.stderr));
    let doc = results(&out);
    // QEMU booted the image through its PVH entry and ran the workloads on its ports.
    assert!(
        figures(&doc, "boot", "qemu")["first_byte_ms"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{doc}"
    );
    for cell in ["tx 4 KiB x16 ports", "rx 4 KiB", "pingpong 64 B"] {
        let f = figures(&doc, cell, "qemu");
        assert_eq!(f["problems"].as_array().unwrap().len(), 0, "{cell}: {f}");
        assert_eq!(f["delivered_ratio"], 1.0, "{cell}: {f}");
    }
    // A console port under a slow reader: perimeter holds the guest back. QEMU drops what
    // its reader cannot take at once, unless the machine is so loaded that the guest itself
    // writes no faster than the reader reads (seen once with a fuzzer on the other core):
    // that is QEMU's behaviour, reported here, not asserted.
    let slow = "console tx 4 KiB, slow reader";
    assert_eq!(figures(&doc, slow, "perimeter")["delivered_ratio"], 1.0);
    let q = figures(&doc, slow, "qemu")["delivered_ratio"]
        .as_f64()
        .unwrap();
    assert!(q <= 1.0, "QEMU delivered more than was sent ({q}): {table}");
    if q == 1.0 {
        eprintln!("{test}: QEMU's virtconsole lost nothing under the slow reader this time");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_soak_moves_data_both_ways_on_every_port_and_loses_nothing() {
    let test = "a_short_soak_moves_data_both_ways_on_every_port_and_loses_nothing";
    if !kvm_present(test) {
        return;
    }
    // 7 s each: past the 5 s warm-up, so that memory is compared too. Seeds 14, 15 and 26
    // once hung at the end (the control socket dropped `remove` commands after answering the
    // first one to a client that had left): the removal and the guest's exit are checked too.
    let dir = tmp_dir("soak");
    let out = dir.to_str().unwrap();
    for seed in ["9", "14", "15", "26"] {
        let o = perimeter(&[
            "bench", "--soak", "0.12", "--ports", "3", "--seed", seed, "--out", out,
        ]);
        let table = text(&o.stdout);
        assert_eq!(status(&o), 0, "seed {seed}: {table}\n{}", text(&o.stderr));
        assert!(table.contains("verdict: ok"), "seed {seed}: {table}");
        assert!(table.contains(": bounded"), "seed {seed}: {table}");
        for port in ["p0", "p1", "p2"] {
            let row: Vec<&str> = table
                .lines()
                .find(|l| l.starts_with(port))
                .unwrap_or_else(|| panic!("seed {seed}: no row {port}: {table}"))
                .split_whitespace()
                .collect();
            // sent = echoed by the host's count = echoed by the guest's, all compared equal.
            assert!(row[1].parse::<u64>().unwrap() > 0, "{table}");
            assert_eq!((row[1], row[1]), (row[2], row[3]), "seed {seed}: {table}");
            assert_eq!(row[4], "equal", "seed {seed}: {table}");
            assert!(
                row[6].parse::<u64>().unwrap() > 0,
                "seed {seed}: no host fault injected: {table}"
            );
        }
        // Memory over time, drawn: a sample a second after the warm-up, and the bound.
        let svg = std::fs::read_to_string(dir.join("soak-memory.svg")).unwrap();
        assert!(
            svg.contains("bound: the sample at 5 s plus 32 MiB"),
            "seed {seed}"
        );
        std::fs::remove_file(dir.join("soak-memory.svg")).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each of `cases` (arguments, what the error says) is refused with status 120.
fn refused(cases: &[(&[&str], &str)]) {
    for (args, needle) in cases {
        let o = perimeter(args);
        assert_eq!(status(&o), 120, "{args:?}");
        assert!(
            text(&o.stderr).contains(needle),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn soak_flags_are_checked() {
    refused(&[
        (&["bench", "--soak", "0"][..], "more than 0"),
        (&["bench", "--soak", "x"][..], "not a number of minutes"),
        (&["bench", "--ports", "3"][..], "--soak"),
        (
            &["bench", "--soak", "1", "--quick"][..],
            "cannot be used with",
        ),
        (
            &["bench", "--soak", "1", "--fault-rate", "2"][..],
            "between 0 and 1",
        ),
    ]);
}

#[test]
fn a_fault_sweep_runs_the_selftest_per_rate_and_draws_it() {
    let test = "a_fault_sweep_runs_the_selftest_per_rate_and_draws_it";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir("fault-sweep");
    let o = perimeter(&[
        "bench",
        "--fault-sweep",
        "both",
        "--rates",
        "0,0.5",
        "--seed",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let (table, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(status(&o), 0, "{table}\n{err}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows.iter().all(|r| r.ends_with("  ok")), "{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("faults.json")).unwrap()).unwrap();
    assert_eq!(doc["side"], "both");
    assert_eq!(doc["seed"], 3);
    let half = &doc["runs"][1];
    assert_eq!(half["rate"], 0.5);
    for key in ["host_failed", "guest_failed"] {
        assert!(half[key].as_u64().unwrap() > 0, "{key}: {half}");
    }
    let svg = std::fs::read_to_string(dir.join("faults.svg")).unwrap();
    assert!(svg.contains("allocb failure probability"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fault_sweep_flags_are_checked() {
    refused(&[
        (
            &["bench", "--fault-sweep", "both", "--rates", "0,2"][..],
            "probability from 0 to 1",
        ),
        (&["bench", "--fault-sweep", "sideways"][..], "invalid value"),
        (&["bench", "--rates", "0.5"][..], "--fault-sweep"),
        (
            &["bench", "--seed", "2"][..],
            "--soak <MINUTES>|--fault-sweep <SIDE>",
        ),
        (
            &["bench", "--fault-sweep", "host", "--soak", "1"][..],
            "cannot be used with",
        ),
    ]);
}
