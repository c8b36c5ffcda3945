//! Linux's own virtio_console driver against perimeter's device: boots the Linux test guest
//! (`images/linux/`) with the conformance program as PID 1 and checks both sides: the guest's
//! lines (port names, hvc0, data both ways, a resize, hot-remove and hot-add) and the host's
//! (what reached each backend, the guest's PORT_OPEN events, init's exit status through the
//! reset port). The test plays the host's part while the guest runs: it resizes the pty and
//! removes and adds ports on the control socket when the guest says it waits for that.
//!
//! Slow where kernel code is emulated (kvm_pvm: about 3 minutes), so it runs only when
//! `PERIMETER_LINUX=1` is set (`scripts/test-linux` builds the kernel and initramfs, then sets
//! it); otherwise it says on stderr that it is skipped. With the variable set, missing
//! artifacts or a missing `/dev/kvm` fail the test.

mod common;

use common::{port_stats, tmp_dir};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// Bytes each data check moves (per direction).
const BYTES: u64 = 256 * 1024;
/// The size the test gives the pty behind hvc1.
const SIZE: (u16, u16) = (123, 45);

/// The kernel and initramfs the scripts in images/linux/ build, or the ones
/// `PERIMETER_LINUX_KERNEL` and `PERIMETER_LINUX_INITRD` name (`scripts/test-linux --kernel
/// --initrd`).
fn artifacts() -> (PathBuf, PathBuf) {
    let (built_kernel, built_initrd) = vmm::linux::built_artifacts();
    let given = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let kernel = given("PERIMETER_LINUX_KERNEL").unwrap_or(built_kernel);
    let initrd = given("PERIMETER_LINUX_INITRD").unwrap_or(built_initrd);
    for f in [&kernel, &initrd] {
        assert!(
            f.exists(),
            "{} is missing: run images/linux/build-kernel and images/linux/build-initramfs (scripts/test-linux does both)",
            f.display()
        );
    }
    (kernel, initrd)
}

fn wanted(test: &str) -> bool {
    if std::env::var("PERIMETER_LINUX").as_deref() == Ok("1") {
        assert!(
            Path::new("/dev/kvm").exists(),
            "PERIMETER_LINUX=1 but /dev/kvm is missing"
        );
        return true;
    }
    eprintln!(
        "\n*** SKIPPED {test}: set PERIMETER_LINUX=1 to boot the Linux guest (scripts/test-linux) ***\n"
    );
    false
}

/// The guest's line for check `what` (`conform: ok WHAT: ...`), which must have passed.
fn passed<'a>(guest: &'a str, what: &str) -> &'a str {
    let ok = format!("conform: ok {what}: ");
    guest
        .lines()
        .find_map(|l| l.strip_prefix(ok.as_str()))
        .unwrap_or_else(|| panic!("no `{ok}` line in the guest's output:\n{guest}"))
}

/// Sends one request on the control socket; its answer must say ok.
fn control(socket: &Path, command: &str) {
    let mut s = UnixStream::connect(socket).expect("the control socket accepts");
    writeln!(s, "{command}").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    assert_eq!(doc["ok"], true, "{command}: {answer}");
}

/// Sets the window size of the terminal at `pty` (the slave side the user would open).
fn set_window(pty: &Path, (cols, rows): (u16, u16)) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(pty)
        .unwrap();
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
    assert_eq!(
        unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
    f
}

/// A line from perimeter: stdout (the JSON document) or stderr (the guest's console and
/// perimeter's own lines).
enum Line {
    Out(String),
    Err(String),
}

fn forward<R: std::io::Read + Send + 'static>(
    from: R,
    to: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if to.send(wrap(line)).is_err() {
                return;
            }
        }
    });
}

#[test]
fn linux_virtio_console_driver_passes_the_conformance_run() {
    if !wanted("linux_virtio_console_driver_passes_the_conformance_run") {
        return;
    }
    let (kernel, initrd) = artifacts();
    let dir = tmp_dir("linux");
    let console_out = dir.join("console.out");
    let socket = dir.join("control.sock");
    let cmdline = format!(
        "rdinit=/conform conform_ports=console,echo,sink,source,idle,tty,echo-hot \
         conform_bytes={BYTES} conform_resize=hvc1:{}x{} conform_remove=echo-hot \
         conform_add=echo-late",
        SIZE.0, SIZE.1
    );
    let console = format!(
        "name=console,backend=file:{},console",
        console_out.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["run", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--memory", "256", "--timeout", "900", "--json", "--control"])
        .arg(&socket)
        .args(["--cmdline", &cmdline, "--port", &console])
        .args(["--port", "name=echo,backend=echo"])
        .args(["--port", "name=sink,backend=null"])
        .args(["--port", "name=source,backend=pattern"])
        .args(["--port", "name=idle,backend=null"])
        .args(["--port", "name=tty,backend=pty,console"])
        .args(["--port", "name=echo-hot,backend=echo"])
        .args(["--port", "name=echo-late,backend=echo,unplugged"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("perimeter starts");
    let (tx, rx) = mpsc::channel();
    forward(child.stdout.take().unwrap(), tx.clone(), Line::Out);
    forward(child.stderr.take().unwrap(), tx, Line::Err);

    // Play the host's part as the guest asks for it. Under --json the guest's console
    // (COM1) shares stderr with perimeter's own lines; stdout holds the JSON document alone.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut pty = None;
    let mut held = Vec::new();
    for line in rx {
        match line {
            Line::Err(l) => {
                eprintln!("{l}");
                if let Some(path) = l.strip_prefix("perimeter: port tty: ") {
                    pty = Some(PathBuf::from(path));
                }
                if let Some(what) = l.strip_prefix("conform: waiting: ") {
                    let words: Vec<&str> = what.split_whitespace().collect();
                    match words.as_slice() {
                        ["resize", "hvc1", ..] => {
                            let pty = pty.as_ref().expect("perimeter printed the pty's path");
                            held.push(set_window(pty, SIZE));
                        }
                        ["remove", name] => control(&socket, &format!("remove {name}")),
                        ["add", name] => control(&socket, &format!("add {name}")),
                        _ => panic!("the guest waits for something the test cannot do: {l}"),
                    }
                }
                stderr += &l;
                stderr.push('\n');
            }
            Line::Out(l) => {
                stdout += &l;
                stdout.push('\n');
            }
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "init's exit status is the number of failed checks"
    );
    assert!(stderr.contains("conform: 11 passed, 0 failed"), "{stderr}");

    // Names in port order, as Linux shows them (echo-late is not plugged in at boot).
    assert_eq!(
        passed(&stderr, "names"),
        "console echo sink source idle tty echo-hot"
    );
    // hvc0 is the console port: its line reached the console port's backend.
    passed(&stderr, "hvc0");
    let console_text = std::fs::read_to_string(&console_out).unwrap();
    assert!(
        console_text.contains("conform: hello from hvc0"),
        "{console_text:?}"
    );

    let doc: serde_json::Value = serde_json::from_str(stdout.trim_end())
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout}"));
    // Guest to host: the null backend took every byte, with the guest's checksum.
    let sink_line = passed(&stderr, "port 2 (sink)");
    let sink = port_stats(&doc, "sink");
    assert_eq!(sink["out_bytes"], BYTES, "{sink}");
    let crc = sink["out_crc32"].as_u64().unwrap();
    assert!(
        sink_line.contains(&format!("crc32 {crc:#010x}")),
        "{sink_line} vs {sink}"
    );
    // Host to guest: the guest checked the pattern; the host counted what it delivered.
    passed(&stderr, "port 3 (source)");
    assert!(port_stats(&doc, "source")["rx_bytes"].as_u64().unwrap() >= BYTES);
    // Both ways through the echo backend: the stream, then 200 round trips of 64 bytes.
    let echo_line = passed(&stderr, "port 1 (echo)");
    assert!(
        echo_line.contains("200 round trips of 64 bytes"),
        "{echo_line}"
    );
    let echo = port_stats(&doc, "echo");
    let both = Some(BYTES + 200 * 64);
    assert_eq!(
        (echo["tx_bytes"].as_u64(), echo["rx_bytes"].as_u64()),
        (both, both),
        "{echo}"
    );
    // Every data port was opened and closed by the guest, and the device saw both.
    passed(&stderr, "port 4 (idle)");
    for name in ["echo", "sink", "source", "idle", "echo-hot", "echo-late"] {
        let p = port_stats(&doc, name);
        assert!(p["guest_opens"].as_u64() >= Some(1), "{p}");
        assert!(p["guest_closes"].as_u64() >= Some(1), "{p}");
        assert_eq!(p["drops"], 0, "{p}");
    }
    // The resize reached the guest's tty through RESIZE.
    let resized = passed(&stderr, "resize hvc1");
    assert!(
        resized.contains(&format!("became {}x{}", SIZE.0, SIZE.1)),
        "{resized}"
    );
    // Removed while open, then added back and used; added from unplugged and used.
    passed(&stderr, "remove echo-hot");
    assert!(passed(&stderr, "add echo-hot again").contains("16384 bytes both ways"));
    assert!(passed(&stderr, "add echo-late").contains("16384 bytes both ways"));
    assert!(port_stats(&doc, "echo-hot")["guest_opens"].as_u64() >= Some(2));
    assert_eq!(doc["transport"]["reset_requests"], 0, "{doc}");
    drop(held);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shell_on_com1_takes_typed_commands_and_its_exit_status_ends_the_run() {
    let test = "a_shell_on_com1_takes_typed_commands_and_its_exit_status_ends_the_run";
    if !wanted(test) || !common::tmux::runnable(test) {
        return;
    }
    let (kernel, initrd) = artifacts();
    let dir = tmp_dir("linux-shell");
    let status = dir.join("status");
    // Busybox's shell as PID 1 on /dev/console, which is ttyS0 (COM1): stdin is COM1's, as
    // no port uses stdio.
    let args = format!(
        "--kernel {} --initrd {} --memory 256 --timeout 900 --cmdline rdinit=/bin/sh \
         --port name=n,backend=null",
        kernel.display(),
        initrd.display()
    );
    let s = common::tmux::Session::start("linux-shell", &args, &status);
    s.until(800, "the shell's prompt", |t| {
        t.lines().any(|l| l.trim_end() == "/ #")
    });
    common::tmux::wait_raw(&s.tty());
    // Only the shell can turn this into 42: the terminal echoes nothing of its own.
    s.type_text("echo hi-$((6*7)) from $(busybox uname -s)");
    s.press(&["Enter"]);
    s.until(60, "the shell answers", |t| t.contains("hi-42 from Linux"));
    // PID 1 exits with 7: the run ends with that status.
    s.type_text("exit 7");
    s.press(&["Enter"]);
    s.until(120, "the run ends", |t| t.contains("RUN-ENDED"));
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "7");
    common::tmux::assert_restored(&s.tty());
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
