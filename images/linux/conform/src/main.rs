//! `conform`: the Linux test guest's conformance program, run as PID 1 (`rdinit=/conform`).
//!
//! It checks perimeter's virtio console through Linux's own virtio_console driver and prints
//! one line per check on its console (ttyS0), `conform: ok WHAT: ...` or `conform: FAIL WHAT:
//! ...`, then `conform: N passed, M failed`, and exits with the number failed (as PID 1, that
//! status reaches `perimeter run`'s exit status). The host's test (`vmm/tests/linux.rs`)
//! checks the other side: what reached each backend, the PORT_OPEN events, the console's
//! output.
//!
//! What it is told, on the kernel command line (Linux hands `key=value` words to init as
//! environment variables):
//! - `conform_ports=a,b,c`: the port names in port order, as given to `--port name=`;
//! - `conform_bytes=N`: bytes per data check (default 262144);
//! - `conform_resize=hvcN:COLSxROWS`: the host will resize the pty behind console hvcN;
//! - `conform_remove=NAME`: the host will remove port NAME, then add it back;
//! - `conform_add=NAME`: the host will add port NAME (`--port ...,unplugged`).
//!
//! For the last three the guest prints `conform: waiting: WHAT` and waits (60 s at most)
//! for the host's test to do it: the resize through the pty, the others through the control
//! socket.
//!
//! A port's name says what its host side does: `echo*` echoes, `sink*` takes and counts
//! (null), `source*` sends perimeter's pattern; a console port (`console` flag) is checked as
//! hvc0. Other ports are opened and closed only.

mod checks;
mod system;

use std::time::Duration;

/// Bytes per data check when the command line does not say.
const DEFAULT_BYTES: usize = 256 * 1024;
/// How long the driver may take to name every port after init starts, and the host to act
/// on a `conform: waiting: ...` line.
const HOST_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    if let Err(e) = system::mount_filesystems() {
        println!("conform: FAIL setup: {e}");
    }
    let expected: Vec<String> = std::env::var("conform_ports")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let bytes = std::env::var("conform_bytes")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_BYTES);
    let mut plan = checks::Plan {
        expected,
        bytes,
        timeout: HOST_TIMEOUT,
        ..Default::default()
    };
    let mut report = checks::Report::default();
    if let Err(e) = plan.hotplug_from(|k| std::env::var(k).ok()) {
        println!("conform: FAIL setup: {e}");
        report.failed += 1;
    }
    checks::run_all(&mut report, &plan);
    println!(
        "conform: {} passed, {} failed",
        report.passed, report.failed
    );
    system::drain_stdout();
    std::process::exit(report.failed.min(119) as i32);
}
