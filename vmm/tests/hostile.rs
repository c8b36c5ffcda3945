//! A hostile guest under KVM: the guest's `hostile` workload breaks its own virtio-console's
//! rings, registers and control messages one case at a time, and the host checks what it
//! could not: that perimeter kept running (under its seccomp filter), that nothing of the
//! bad buffers reached a backend, and that its counters saw every refusal and reset.
//!
//! Needs `/dev/kvm`; without it the test says so on stderr and passes without running.

mod common;

use common::{json, kvm_present, perimeter, port_stats, status, text, tmp_dir};

#[test]
fn a_hostile_guest_breaks_rings_registers_and_control_messages_and_the_device_holds() {
    if !kvm_present(
        "a_hostile_guest_breaks_rings_registers_and_control_messages_and_the_device_holds",
    ) {
        return;
    }
    let dir = tmp_dir("hostile-log");
    let log_file = dir.join("perimeter.log");
    let o = perimeter(&[
        "run",
        "--workload",
        "hostile",
        "--stats",
        "--json",
        "--timeout",
        "120",
        "--log-file",
        log_file.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(status(&o), 0, "stdout: {stdout}\nstderr: {stderr}");
    // The guest's lines are on stderr (stdout holds the JSON document alone).
    let guest = &stderr;
    let lines: Vec<&str> = guest
        .lines()
        .filter(|l| l.starts_with("hostile: "))
        .collect();
    let survived: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.ends_with(", survived"))
        .collect();
    let n = survived.len();
    assert!(n >= 20, "every case reports: {guest}");
    assert!(
        guest.contains(&format!("hostile: {n} of {n} cases survived")),
        "{guest}"
    );
    assert!(!guest.contains("FAILED"), "{guest}");
    let st = json(&o);
    assert_eq!(
        st["results"][0]["fields"][4],
        serde_json::json!(["check", "ok"])
    );

    // Nothing of a bad transmit buffer reached the sink, nor anything of the source's data
    // a read-only receive buffer; the device counted them as bad.
    let port = |name| port_stats(&st, name);
    let (sink, source, echo) = (port("sink"), port("source"), port("echo"));
    assert_eq!(sink["tx_bytes"], 0, "{sink}");
    assert_eq!(sink["out_bytes"], 0, "{sink}");
    assert!(sink["bad_descriptors"].as_u64().unwrap() >= 4, "{sink}");
    assert_eq!(source["rx_bytes"], 0, "{source}");
    assert!(source["bad_descriptors"].as_u64().unwrap() >= 1, "{source}");
    // The echo port moved everything it was given through every case.
    assert_eq!(echo["tx_bytes"], echo["rx_bytes"], "{echo}");
    let echoed: u64 = st["results"][0]["fields"][3][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let running = survived
        .iter()
        .filter(|l| l.contains("echo port moved"))
        .count() as u64;
    assert!(running >= 15 && echoed == running * 1500, "{guest}");
    assert!(echo["tx_bytes"].as_u64().unwrap() > echoed, "{echo}");
    for p in st["ports"].as_array().unwrap() {
        assert_eq!(p["drops"], 0, "{p}");
    }

    // Each reset the guest saw was asked for by the device, and counted; refused writes and
    // ignored control messages too.
    let t = &st["transport"];
    let resets_seen = survived
        .iter()
        .filter(|l| l.contains(": device needs reset,"))
        .count() as u64;
    assert!(resets_seen >= 6, "{guest}");
    assert_eq!(t["reset_requests"].as_u64().unwrap(), resets_seen, "{t}");
    assert_eq!(t["failed_activations"], 2, "{t}");
    assert!(t["refused_accesses"].as_u64().unwrap() >= 4, "{t}");
    assert!(st["control_ignored"].as_u64().unwrap() >= 4, "{st}");

    // The log (warnings, the default) says why each ring broke and each activation failed,
    // in the file and not on stderr.
    let log = std::fs::read_to_string(&log_file).unwrap();
    let broken = log
        .lines()
        .filter(|l| l.contains("the device asks the driver to reset"))
        .count();
    assert!(broken >= 4, "{log}");
    assert_eq!(
        log.matches("DRIVER_OK did not start the device").count(),
        2,
        "{log}"
    );
    assert!(log.lines().count() < 100, "bounded: {log}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
