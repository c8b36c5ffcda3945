//! The virtio-console under KVM, driven by a driver we did not write: the guest's `vd-echo`
//! workload runs the crates.io `virtio-drivers` console (single port) and echoes what the host
//! sends on port 0 back to it, through a socket backend.
//!
//! These need `/dev/kvm`. Where it is missing each test says so on stderr (not captured) and
//! passes without running; where it is present (CI's runners) they always run.

mod common;

use common::{data, kvm_present, tmp_dir};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// Connects to the socket backend once perimeter says it listens (its "port NAME: PATH" line
/// on stderr, printed after the bind); returns the stream and a thread collecting the rest of
/// stderr.
fn connect(path: &Path, child: &mut Child) -> (UnixStream, thread::JoinHandle<String>) {
    let mut err = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut seen = String::new();
    let announced = format!("perimeter: port p0: {}", path.display());
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("perimeter ended before its socket {path:?} listened; stderr: {seen}");
        }
        seen += &line;
        if line.trim_end() == announced {
            break;
        }
    }
    let rest = thread::spawn(move || {
        let _ = err.read_to_string(&mut seen);
        seen
    });
    (UnixStream::connect(path).expect("the socket listens"), rest)
}

/// Runs `vd-echo` over a socket on port 0 with `extra` flags; returns (stdout, stderr).
fn echo_through_virtio_drivers(test: &str, total: usize, extra: &[&str]) -> (String, String) {
    let dir = tmp_dir(test);
    let sock = dir.join("port0.sock");
    let port = format!("name=p0,backend=socket:{}", sock.display());
    let workload = format!("workload=vd-echo:{total}");
    let mut args = vec![
        "run",
        "--port",
        &port,
        "--cmdline",
        &workload,
        "--timeout",
        "120",
        "--stats",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("perimeter starts");
    let (s, stderr) = connect(&sock, &mut child);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let sent = data(total, 0);
    let mut w = s.try_clone().unwrap();
    let to_send = sent.clone();
    let writer = thread::spawn(move || w.write_all(&to_send));
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0; 65536];
    while got.len() < total {
        match (&s).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the echo after {} bytes: {e}", got.len()),
        }
    }
    writer.join().unwrap().expect("the host wrote every byte");
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr.join().unwrap(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(got.len(), total, "echoed length; stderr: {stderr}");
    let first_bad = got.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "the echo differs");
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, stderr)
}

/// The value of `"key":N` in the first port of the JSON statistics line.
fn stat(stdout: &str, key: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("{\"ports\""))
        .unwrap_or_else(|| panic!("no JSON statistics in {stdout}"));
    let at = line.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn virtio_drivers_console_echoes_1_mib_through_port_0() {
    if !kvm_present("virtio_drivers_console_echoes_1_mib_through_port_0") {
        return;
    }
    let total = 1 << 20;
    let (out, guest) = echo_through_virtio_drivers("vd-echo", total, &[]);
    assert!(
        guest.contains(&format!("vd-echo: {total} bytes echoed")),
        "{guest}"
    );
    for key in ["tx_bytes", "rx_bytes", "out_bytes"] {
        assert_eq!(stat(&out, key), total as u64, "{key}: {out}");
    }
    assert_eq!(stat(&out, "drops"), 0, "{out}");
    assert_eq!(stat(&out, "pending_out_bytes"), 0, "{out}");
}

#[test]
fn host_buffer_faults_lose_nothing_under_a_real_guest() {
    if !kvm_present("host_buffer_faults_lose_nothing_under_a_real_guest") {
        return;
    }
    let total = 256 << 10;
    let (out, _) =
        echo_through_virtio_drivers("vd-echo-fault", total, &["--fault", "allocb=rate:0.5:7"]);
    assert_eq!(stat(&out, "tx_bytes"), total as u64, "{out}");
    assert!(stat(&out, "allocb_failures") > 0, "{out}");
    assert!(stat(&out, "bufcall_retries") > 0, "{out}");
    assert_eq!(stat(&out, "drops"), 0, "{out}");
}
