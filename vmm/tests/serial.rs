//! COM1 and `--serial`: input from a pipe and from a socket's client reaches the guest's 8250
//! (the `uart-echo` workload reads it and writes it back), output goes to the backend asked
//! for, output nobody can take is counted, and bad arguments are refused in one line.
//!
//! Needs `/dev/kvm`; without it each test says so on stderr and passes without running.

mod common;

use common::{json, kvm_present, perimeter, spawn_piped, status, text, tmp_dir};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `n` printable bytes that are not periodic (so a lost, repeated or reordered byte shows).
fn printable(n: usize, seed: u64) -> Vec<u8> {
    common::data(n, seed)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect()
}

#[test]
fn input_piped_to_stdin_reaches_com1_and_comes_back_on_stdout() {
    if !kvm_present("input_piped_to_stdin_reaches_com1_and_comes_back_on_stdout") {
        return;
    }
    let input = printable(2000, 1);
    let workload = format!("uart-echo:{}", input.len());
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["run", "--workload", &workload, "--timeout", "120"])
        .args(["--port", "name=n,backend=null", "--stats"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Far more than the UART's 64-byte FIFO at once: perimeter holds the rest until the
    // guest makes room.
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(status(&o), 0, "{err}");
    let crc = crc32fast::hash(&input);
    let line = format!(
        "uart-echo: {} bytes echoed, crc32 {crc:#010x}\n",
        input.len()
    );
    let echoed = out
        .strip_suffix(&line)
        .unwrap_or_else(|| panic!("ends with {line:?}: {out}"));
    assert!(
        echoed.ends_with(std::str::from_utf8(&input).unwrap()),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "COM1: {} bytes out (0 lost), {} bytes in, 0 client(s)",
            input.len(),
            input.len()
        )),
        "{err}"
    );
}

#[test]
fn a_stdio_console_port_keeps_stdin_and_com1_gets_none() {
    if !kvm_present("a_stdio_console_port_keeps_stdin_and_com1_gets_none") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args([
            "run",
            "--workload",
            "uart-echo:1",
            "--timeout",
            "3",
            "--json",
        ])
        .args(["--port", "name=c,backend=stdio,console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"for the port")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(status(&o), 124, "the guest waits for COM1 in vain");
    let doc = json(&o);
    assert_eq!(doc["serial"]["in_bytes"], 0, "{doc}");
    assert_eq!(
        doc["ports"][0]["in_bytes"], 12,
        "the port took stdin: {doc}"
    );
}

#[test]
fn a_socket_client_talks_to_com1_both_ways_and_output_without_one_is_counted() {
    let test = "a_socket_client_talks_to_com1_both_ways_and_output_without_one_is_counted";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir("serial-socket");
    let sock = dir.join("com1.sock");
    let serial = format!("socket:{}", sock.display());

    // No client: the guest's line is dropped, counted and said, and the run goes on.
    let o = perimeter(&["run", "--workload", "uart", "--serial", &serial, "--json"]);
    assert_eq!(status(&o), 0, "{}", text(&o.stderr));
    let doc = json(&o);
    assert_eq!(doc["serial"]["out_lost"], 16, "{doc}");
    assert_eq!(doc["serial"]["out_bytes"], 0, "{doc}");
    assert!(
        text(&o.stderr).contains("perimeter: COM1: 16 bytes of guest output were dropped"),
        "{}",
        text(&o.stderr)
    );
    assert!(!sock.exists(), "the socket file is removed at the end");

    // A client: binary data both ways, byte for byte.
    let input = common::data(4096, 2);
    let workload = format!("uart-echo:{}", input.len());
    let child = spawn_piped(&[
        "run",
        "--workload",
        &workload,
        "--timeout",
        "120",
        "--json",
        "--serial",
        &serial,
        "--port",
        "name=n,backend=null",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = loop {
        match UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "the socket never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    c.write_all(&input).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut back = vec![0; input.len()];
    c.read_exact(&mut back).unwrap();
    assert!(back == input, "the echo differs");
    let o = child.wait_with_output().unwrap();
    assert_eq!(status(&o), 0, "{}", text(&o.stderr));
    let doc = json(&o);
    let n = input.len() as u64;
    assert_eq!(doc["serial"]["in_bytes"], n, "{doc}");
    assert_eq!(doc["serial"]["out_bytes"], n, "{doc}");
    assert_eq!(doc["serial"]["out_lost"], 0, "{doc}");
    assert_eq!(doc["serial"]["connects"], 1, "{doc}");
    assert!(!sock.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_and_null_take_com1_output_off_stdout() {
    if !kvm_present("file_and_null_take_com1_output_off_stdout") {
        return;
    }
    let dir = tmp_dir("serial-file");
    let file = dir.join("com1.out");
    std::fs::write(&file, "old content that must go").unwrap();
    let serial = format!("file:{}", file.display());
    let o = perimeter(&["run", "--workload", "uart", "--serial", &serial]);
    assert_eq!(status(&o), 0, "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello from COM1\n");
    assert_eq!(text(&o.stdout), "");

    let o = perimeter(&["run", "--workload", "uart", "--serial", "null", "--json"]);
    assert_eq!(status(&o), 0, "{}", text(&o.stderr));
    assert_eq!(json(&o)["serial"]["out_bytes"], 16);
    assert!(!text(&o.stderr).contains("hello from COM1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_serial_arguments_are_refused_in_one_line() {
    let dir = tmp_dir("serial-bad");
    let missing = format!("file:{}", dir.join("no/such/dir/out").display());
    let taken = format!("socket:{}", dir.join("same").display());
    let port = format!("name=p,backend=socket:{}", dir.join("same").display());
    let mut cases = vec![
        (
            vec!["--serial", "tty"],
            "expected stdio, file:PATH, socket:PATH or null",
        ),
        (vec!["--serial", "file:"], "the path is missing"),
        (
            vec!["--serial", &taken, "--port", &port],
            "port \"p\" uses that path",
        ),
    ];
    // Found when the backend opens, once KVM has made the VM.
    if kvm_present("bad_serial_arguments_are_refused_in_one_line (a file that cannot be made)") {
        cases.push((vec!["--serial", &missing], "cannot create it"));
    }
    for (args, says) in cases {
        let mut all = vec!["run", "--workload", "uart"];
        all.extend(args.iter().copied());
        let o = perimeter(&all);
        let err = text(&o.stderr);
        assert_eq!(status(&o), 120, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("perimeter: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.join("same").exists(), "nothing half-done");
    std::fs::remove_dir_all(&dir).unwrap();
}
