//! Faulty backends under a real guest: a socket client that leaves mid-transfer, a reader
//! that pauses for seconds, a pty whose reader closes it, a file on a full disk. Nothing the
//! backend accepted is lost on perimeter's side, what it could not deliver is reported, and
//! no port holds up another.
//!
//! These need `/dev/kvm`. Where it is missing each test says so on stderr (not captured) and
//! passes without running; where it is present (CI's runners) they always run.

mod common;

use common::{json, kvm_present, port_stats, tmp_dir};
use device_model::console::HEAD_HIWAT;
use device_model::console::backend::BATCH_BYTES;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Starts `perimeter run --workload WORKLOAD` on `ports` (each a `--port` value), with JSON
/// results and statistics on stdout (stdout and stderr piped).
fn start(workload: &str, ports: &[&str]) -> Child {
    start_with(workload, ports, &[])
}

/// [`start`] with more arguments.
fn start_with(workload: &str, ports: &[&str], more: &[&str]) -> Child {
    let mut args = vec![
        "run",
        "--workload",
        workload,
        "--json",
        "--stats",
        "--timeout",
        "60",
    ];
    for p in ports {
        args.extend(["--port", p]);
    }
    args.extend(more);
    Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("perimeter starts")
}

/// Reads stderr up to the line announcing port `name` ("perimeter: port NAME: PATH");
/// returns the path and a thread collecting the rest of stderr.
fn announced(child: &mut Child, name: &str) -> (String, thread::JoinHandle<String>) {
    let mut err = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let prefix = format!("perimeter: port {name}: ");
    let mut seen = String::new();
    let path = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("perimeter ended before announcing port {name}; stderr: {seen}");
        }
        seen += &line;
        if let Some(p) = line.trim_end().strip_prefix(&prefix) {
            break p.to_string();
        }
    };
    (path, rest_of(err, seen))
}

fn rest_of(mut err: BufReader<ChildStderr>, mut seen: String) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let _ = err.read_to_string(&mut seen);
        seen
    })
}

/// Waits for the run; returns its output with the collected stderr.
fn finish(child: Child, stderr: thread::JoinHandle<String>) -> (Output, String) {
    let out = child.wait_with_output().expect("perimeter ends");
    (out, stderr.join().unwrap())
}

/// The fields of the guest's result for `workload` on `port`.
fn result(doc: &Value, workload: &str, port: &str) -> Vec<(String, String)> {
    let fields = |r: &Value| -> Vec<(String, String)> {
        r["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
            .collect()
    };
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(fields)
        .find(|f| {
            f.contains(&("workload".into(), workload.into()))
                && f.contains(&("port".into(), port.into()))
        })
        .unwrap_or_else(|| panic!("no {workload} result for {port}: {doc}"))
}

fn field<'a>(r: &'a [(String, String)], key: &str) -> &'a str {
    &r.iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {r:?}"))
        .1
}

/// Reads from `s` until end of file.
fn read_to_end(mut s: impl Read, into: &mut Vec<u8>) {
    let mut buf = vec![0; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {} bytes: {e}", into.len()),
        }
    }
}

#[test]
fn a_socket_client_that_leaves_mid_transfer_leaves_the_rest_to_the_next() {
    let test = "a_socket_client_that_leaves_mid_transfer_leaves_the_rest_to_the_next";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir(test);
    let sock = dir.join("p0.sock");
    let port = format!("name=p0,backend=socket:{}", sock.display());
    let total = 4 << 20;
    let mut child = start("tx:4K:4M:p0", &[&port]);
    let (_, stderr) = announced(&mut child, "p0");
    // The first client reads 1 MiB, says it reads no more (shutdown), and takes what was
    // already sent to it; the next client gets the rest.
    let a = UnixStream::connect(&sock).expect("the socket listens");
    let mut got = Vec::new();
    let mut buf = vec![0; 65536];
    while got.len() < 1 << 20 {
        let n = (&a).read(&mut buf).unwrap();
        assert!(n > 0, "end of file after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    a.shutdown(std::net::Shutdown::Read).unwrap();
    read_to_end(&a, &mut got);
    let first = got.len();
    drop(a);
    let b = UnixStream::connect(&sock).expect("the socket still listens");
    read_to_end(&b, &mut got);
    let (out, err) = finish(child, stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc = json(&out);
    assert_eq!(
        got.len(),
        total,
        "first client {first} bytes, both {}; {err}",
        got.len()
    );
    let crc = format!("{:08x}", crc32fast::hash(&got));
    assert_eq!(
        field(&result(&doc, "tx", "p0"), "crc"),
        crc,
        "what both clients got"
    );
    let p = port_stats(&doc, "p0");
    assert_eq!(p["connects"], 2, "{p}");
    assert_eq!(p["pending_out_bytes"], 0, "{p}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `size`-byte chunk of `data` equals the first (the fairness workload's messages).
fn chunks_alike(data: &[u8], size: usize) -> bool {
    data.chunks(size).all(|c| c == &data[..c.len()])
}

#[test]
fn a_reader_that_pauses_for_seconds_holds_back_only_its_own_port() {
    let test = "a_reader_that_pauses_for_seconds_holds_back_only_its_own_port";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir(test);
    let sock = dir.join("slow.sock");
    let port = format!("name=slow,backend=socket:{}", sock.display());
    // What can be on its way while the client sleeps: the guest's stream head and ring, the
    // host's stream head, one output batch, and the socket's buffers (each well under 1 MiB).
    // The guest must still be writing when the reader has taken its first 1 MiB.
    let on_the_way = (HEAD_HIWAT as usize) * 2 + BATCH_BYTES + (1 << 20);
    let total = (1 << 20) + on_the_way + (512 << 10);
    let mut child = start(
        &format!("fairness:2:{total}:4K"),
        &[
            "name=con,backend=stdio,console",
            &port,
            "name=fast,backend=null",
        ],
    );
    let (_, stderr) = announced(&mut child, "slow");
    let s = UnixStream::connect(&sock).expect("the socket listens");
    // Two pauses of 1.5 s (the guest calls a port stalled after 2 s without progress).
    let pause = Duration::from_millis(1500);
    let mut got = Vec::new();
    let mut buf = vec![0; 65536];
    let mut paused_at = Vec::new();
    while got.len() < total {
        let n = (&s).read(&mut buf).unwrap();
        assert!(n > 0, "end of file after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        let mark = [256 << 10, 1 << 20][paused_at.len().min(1)];
        if paused_at.len() < 2 && got.len() >= mark {
            paused_at.push(Instant::now());
            thread::sleep(pause);
        }
    }
    drop(s);
    let (out, err) = finish(child, stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc = json(&out);
    assert_eq!(got.len(), total, "{err}");
    assert!(chunks_alike(&got, 4096), "the slow port's data was changed");
    let (slow, fast) = (
        result(&doc, "fairness", "slow"),
        result(&doc, "fairness", "fast"),
    );
    assert_eq!(field(&slow, "check"), "ok", "{slow:?}");
    assert_eq!(field(&fast, "check"), "ok", "{fast:?}");
    // The null port finished during the first pause; the slow one (whose bytes do not all
    // fit in what is on the way) only after it.
    let ns = |r: &[(String, String)]| field(r, "ns").parse::<u64>().unwrap();
    assert!(
        ns(&fast) < pause.as_nanos() as u64,
        "fast {fast:?}, slow {slow:?}"
    );
    assert!(
        ns(&slow) >= pause.as_nanos() as u64,
        "slow {slow:?}; paused at {paused_at:?}; {}",
        port_stats(&doc, "slow")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens the pty's terminal side (not as our controlling terminal) in raw mode.
fn open_raw(path: &Path) -> OwnedFd {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fd = OwnedFd::from(f);
    // SAFETY: termios is plain data filled by tcgetattr; the descriptor is open.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    fd
}

/// Reads `fd` until nothing comes for 3 s or the other side goes away.
fn read_pty(fd: &OwnedFd, into: &mut Vec<u8>, until: usize) {
    let mut buf = vec![0u8; 65536];
    while into.len() < until {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        if unsafe { libc::poll(&mut p, 1, 3000) } <= 0 {
            return;
        }
        // SAFETY: reads into our buffer, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return; // EIO: perimeter closed its side
        }
        into.extend_from_slice(&buf[..n as usize]);
    }
}

#[test]
fn a_pty_closed_by_its_reader_blocks_only_its_port_and_resumes_when_reopened() {
    let test = "a_pty_closed_by_its_reader_blocks_only_its_port_and_resumes_when_reopened";
    if !kvm_present(test) {
        return;
    }
    let total = 2 << 20;
    let mut child = start(
        "fairness:2:2M:4K",
        &[
            "name=con,backend=stdio,console",
            "name=tty,backend=pty",
            "name=fast,backend=null",
        ],
    );
    let (path, stderr) = announced(&mut child, "tty");
    let path = Path::new(&path).to_path_buf();
    let mut got = Vec::new();
    let fd = open_raw(&path);
    read_pty(&fd, &mut got, 256 << 10);
    drop(fd);
    thread::sleep(Duration::from_millis(1000));
    let fd = open_raw(&path);
    read_pty(&fd, &mut got, total);
    let (out, err) = finish(child, stderr);
    drop(fd);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc = json(&out);
    let (tty, fast) = (
        result(&doc, "fairness", "tty"),
        result(&doc, "fairness", "fast"),
    );
    assert_eq!(field(&tty, "check"), "ok", "{tty:?}");
    assert_eq!(field(&fast, "check"), "ok", "{fast:?}");
    // perimeter wrote every byte into the pty; closing the terminal side discards what its
    // reader had not read (the line discipline's buffer, under 4 KiB), as the kernel does.
    let p = port_stats(&doc, "tty");
    assert_eq!(p["out_bytes"], total, "{p}");
    assert_eq!(p["pending_out_bytes"], 0, "{p}");
    assert!(
        got.len() <= total && got.len() + 4096 >= total,
        "read {} of {total} bytes; {err}",
        got.len()
    );
}

#[test]
fn a_file_on_a_full_disk_is_reported_undelivered_and_blocks_no_other_port() {
    let test = "a_file_on_a_full_disk_is_reported_undelivered_and_blocks_no_other_port";
    if !kvm_present(test) {
        return;
    }
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let mut child = start(
        "fairness:2:4M:4K",
        &[
            "name=con,backend=stdio,console",
            "name=full,backend=file:/dev/full",
            "name=fast,backend=null",
        ],
    );
    let err = rest_of(BufReader::new(child.stderr.take().unwrap()), String::new());
    let (out, err) = finish(child, err);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc = json(&out);
    let (full, fast) = (
        result(&doc, "fairness", "full"),
        result(&doc, "fairness", "fast"),
    );
    assert_eq!(field(&fast, "check"), "ok", "{fast:?}");
    assert_eq!(field(&fast, "bytes"), (4 << 20).to_string(), "{fast:?}");
    assert_eq!(field(&full, "check"), "stalled", "{full:?}");
    // Everything the device took from the guest on that port is reported, none delivered.
    let p = port_stats(&doc, "full");
    let taken = p["tx_bytes"].as_u64().unwrap();
    assert!(taken > 0, "{p}");
    assert_eq!(p["out_bytes"], 0, "{p}");
    assert!(
        err.contains(&format!(
            "port full: {taken} bytes of guest output could not be delivered to file:/dev/full"
        )),
        "{err}"
    );
}

#[test]
fn a_stop_signal_ends_the_run_cleanly_with_its_statistics() {
    if !kvm_present("a_stop_signal_ends_the_run_cleanly_with_its_statistics") {
        return;
    }
    let dir = tmp_dir("signals");
    for (sig, status, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGHUP, 129, "SIGHUP"),
    ] {
        let sock = dir.join(format!("port-{sig}.sock"));
        let ctl = dir.join(format!("control-{sig}.sock"));
        let port = format!("name=s,backend=socket:{}", sock.display());
        let ctl_arg = ctl.to_str().unwrap();
        let mut child = start_with(
            "echo",
            &["name=n,backend=null", &port],
            &["--control", ctl_arg],
        );
        // The guest's echo is running once it says so (on stderr: stdout holds the JSON
        // document alone): the VM, its sockets and handlers are up.
        let err = common::wait_for_line(&mut child, &["echo:".to_string()]);
        assert!(sock.exists() && ctl.exists());
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = child.wait_with_output().unwrap();
        let err = err.join().unwrap();
        assert_eq!(o.status.code(), Some(status), "{name}: {err}");
        assert!(err.contains(&format!("stopped by {name}")), "{name}: {err}");
        let doc = json(&o);
        assert_eq!(port_stats(&doc, "n")["drops"], 0, "{doc}");
        assert!(!sock.exists(), "{name}: the port's socket file was removed");
        assert!(!ctl.exists(), "{name}: the control socket file was removed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn input_a_client_sent_before_it_left_is_still_delivered() {
    let test = "input_a_client_sent_before_it_left_is_still_delivered";
    if !kvm_present(test) {
        return;
    }
    let dir = tmp_dir(test);
    let sock = dir.join("e.sock");
    let ctl = dir.join("ctl.sock");
    let port = format!("name=e,backend=socket:{}", sock.display());
    let ctl_arg = ctl.to_str().unwrap();
    let mut child = start_with("echo", &[&port], &["--control", ctl_arg]);
    let (_, stderr) = announced(&mut child, "e");
    // Send until the socket takes no more (the guest echoes; the echo is not read, so flow
    // control holds everything back), then close without reading.
    let input = common::data(16 << 20, 3);
    let a = UnixStream::connect(&sock).expect("the socket listens");
    a.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let mut stalled = Instant::now();
    while sent < input.len() && stalled.elapsed() < Duration::from_millis(1500) {
        match (&a).write(&input[sent..(sent + 65536).min(input.len())]) {
            Ok(n) => {
                sent += n;
                stalled = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("send after {sent} bytes: {e}"),
        }
    }
    assert!(
        sent < input.len(),
        "flow control never held the client back"
    );
    drop(a);
    // What was echoed into the first client's socket left with it; everything else it sent
    // is echoed to the next client: the tail of the input.
    let b = UnixStream::connect(&sock).expect("the socket still listens");
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0; 65536];
    while let Ok(n) = (&b).read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let c = UnixStream::connect(&ctl).unwrap();
    writeln!(&c, "remove e").unwrap();
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).unwrap();
    let (out, err) = finish(child, stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc = json(&out);
    let p = port_stats(&doc, "e");
    let n = |k: &str| p[k].as_u64().unwrap();
    assert_eq!(
        (
            n("in_bytes"),
            n("rx_bytes"),
            n("tx_bytes"),
            n("out_bytes"),
            n("drops")
        ),
        (sent as u64, sent as u64, sent as u64, sent as u64, 0),
        "every byte sent reached the guest and came back out: {p}"
    );
    assert!(!got.is_empty(), "the second client got the rest");
    assert!(
        got == input[sent - got.len()..sent],
        "the second client's echo is the input's tail ({} of {sent} bytes)",
        got.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
