//! The control socket of a running VM, driven as a user would: `perimeter ctl SOCKET REQUEST`
//! lists the ports with their paths, removes and adds one, reads the statistics, refuses what
//! it must in one line, and ends the run with `shutdown`; `--metrics` appends the same
//! statistics to a file while the guest runs.
//!
//! Needs `/dev/kvm`; without it the test says so on stderr and passes without running.

mod common;

use common::{kvm_present, perimeter, spawn_piped, status, text, tmp_dir, wait_for_line};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};

fn ctl(socket: &str, request: &[&str]) -> (i32, Value, String) {
    let o = perimeter(&[&["ctl", socket][..], request].concat());
    let out = text(&o.stdout);
    let doc = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (status(&o), doc, text(&o.stderr))
}

#[test]
fn a_running_vm_is_listed_changed_and_shut_down_through_perimeter_ctl() {
    if !kvm_present("a_running_vm_is_listed_changed_and_shut_down_through_perimeter_ctl") {
        return;
    }
    let dir = tmp_dir("ctl");
    let sock = dir.join("control.sock");
    let s = sock.to_str().unwrap();
    let mut child = spawn_piped(&[
        "run",
        "--workload",
        "echo",
        "--timeout",
        "120",
        "--control",
        s,
        "--port",
        "name=a,backend=null",
        "--port",
        "name=t,backend=pty",
    ]);
    let err = wait_for_line(&mut child, &["perimeter: control: ".to_string()]);
    // The guest's driver has every port open (its echo says so) before anything changes.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    while !stdout.contains("port(s) open") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "ended early: {stdout}"
        );
        stdout += &line;
    }

    let (st, doc, _) = ctl(s, &["ports"]);
    assert_eq!(st, 0, "{doc}");
    let ports = doc["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{doc}");
    assert_eq!(ports[0]["name"], "a");
    assert_eq!(ports[0]["backend"], "null");
    assert_eq!(ports[0]["guest_open"], true, "{doc}");
    assert!(
        ports[1]["path"].as_str().unwrap().starts_with("/dev/pts/"),
        "{doc}"
    );
    let announced = format!("perimeter: port t: {}", ports[1]["path"].as_str().unwrap());

    assert_eq!(
        ctl(s, &["remove", "a"]).1,
        serde_json::json!({"ok": true, "removed": "a"})
    );
    let (st, doc, _) = ctl(s, &["remove", "a"]);
    assert_eq!(st, 1, "a refusal: {doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("not plugged in"),
        "{doc}"
    );
    assert_eq!(ctl(s, &["ports"]).1["ports"][0]["plugged"], false);
    assert_eq!(ctl(s, &["add", "a"]).0, 0);

    let (st, doc, _) = ctl(s, &["stats"]);
    assert_eq!(st, 0, "{doc}");
    assert!(
        doc["stats"]["transport"]["activations"].as_u64().unwrap() >= 1,
        "{doc}"
    );
    assert!(doc["stats"]["control_in"].as_u64().unwrap() >= 2, "{doc}");

    let (st, _, e) = ctl(s, &["fly"]);
    assert_eq!(st, 120, "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("unknown request \"fly\""), "{e}");
    let nobody = dir.join("nobody.sock");
    let (st, _, e) = ctl(nobody.to_str().unwrap(), &["ports"]);
    assert_eq!(st, 120, "{e}");
    assert!(
        e.starts_with("perimeter ctl: ") && e.lines().count() == 1,
        "{e}"
    );

    assert_eq!(ctl(s, &["shutdown"]).0, 0);
    out.read_to_string(&mut stdout).unwrap();
    let seen = err.join().unwrap();
    assert!(
        seen.contains(&announced),
        "the same path as announced: {seen}"
    );
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0), "{stdout}\n{seen}");
    assert!(
        seen.contains("stopped by the control socket's shutdown"),
        "{seen}"
    );
    assert!(!sock.exists(), "the socket file is removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metrics_are_appended_as_json_lines_while_the_guest_runs() {
    let test = "metrics_are_appended_as_json_lines_while_the_guest_runs";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir("metrics");
    let file = dir.join("metrics.jsonl");
    std::fs::write(&file, "an earlier line\n").unwrap();
    let o = perimeter(&[
        "run",
        "--workload",
        "tx:4K:512M:sink",
        "--metrics",
        file.to_str().unwrap(),
        "--metrics-every",
        "0.02",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let written = std::fs::read_to_string(&file).unwrap();
    let mut lines = written.lines();
    assert_eq!(
        lines.next(),
        Some("an earlier line"),
        "appended, not truncated"
    );
    let docs: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        docs.len() >= 3,
        "a line every 20 ms and one at the end: {written}"
    );
    let sink = |d: &serde_json::Value| {
        d["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sink")
            .unwrap()["tx_bytes"]
            .as_u64()
            .unwrap()
    };
    for pair in docs.windows(2) {
        assert!(pair[0]["uptime_ms"].as_u64() <= pair[1]["uptime_ms"].as_u64());
        assert!(sink(&pair[0]) <= sink(&pair[1]), "counters only grow");
    }
    let last = docs.last().unwrap();
    assert!(last["time"].as_str().unwrap().ends_with('Z'), "{last}");
    assert_eq!(last["serial"]["out_lost"], 0, "{last}");
    // The last line is written as the guest stops: everything it sent is counted.
    let end: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sink(last), sink(&end));
    assert_eq!(sink(last), 512 << 20);
    std::fs::remove_dir_all(&dir).unwrap();
}
