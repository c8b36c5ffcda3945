//! The seccomp filter of a running VM (`vmm::seccomp`). Installing it confines the whole
//! process for good, so each case runs in a child: this test binary again, with
//! `PERIMETER_SECCOMP_CASE` naming what the child does after installing the filter.
//! The boot tests run `perimeter run` with the filter on (the default) for every workload and
//! backend; here, a device thread that makes a forbidden call must take the process down.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

const CASE: &str = "PERIMETER_SECCOMP_CASE";

/// Runs test `name` again in a child process that does `case`.
fn child(name: &str, case: &str) -> ExitStatus {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .status()
        .expect("start the child")
}

/// In a child: installs the filter, then runs `case` on a new thread, as a device thread
/// would, and exits 0 if the process is still alive.
fn run_case(case: &str) -> ! {
    vmm::seccomp::install().expect("install the filter");
    let case = case.to_string();
    let device = std::thread::Builder::new()
        .name("device".into())
        .spawn(move || forbidden_or_allowed(&case))
        .expect("threads can still be started");
    device.join().expect("the device thread");
    std::process::exit(0);
}

fn forbidden_or_allowed(case: &str) {
    match case {
        // A network socket.
        "socket" => {
            // SAFETY: a plain system call; the descriptor, if any, is owned at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: just returned by socket(2) and not used elsewhere.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // Starting a program (fork or clone without CLONE_THREAD, then execve).
        "spawn" => {
            let _ = Command::new("/bin/true").status();
        }
        // A signal to another process.
        "kill" => {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(1, 0) };
        }
        // What a running VM does: threads, locks, memory, eventfds; opening a file fails.
        "allowed" => {
            let m = std::sync::Arc::new(std::sync::Mutex::new(vec![0u8; 64 << 20]));
            let m2 = m.clone();
            std::thread::spawn(move || m2.lock().unwrap()[1] = 1)
                .join()
                .unwrap();
            assert_eq!(m.lock().unwrap()[1], 1);
            let e = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
            e.write(7).unwrap();
            assert_eq!(e.read().unwrap(), 7);
            let err = std::fs::File::open("/etc/hostname").unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            eprintln!("allowed calls work under the filter");
        }
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn a_forbidden_call_from_a_device_thread_kills_the_process() {
    if let Ok(case) = std::env::var(CASE) {
        run_case(&case);
    }
    for case in ["socket", "spawn", "kill"] {
        let st = child(
            "a_forbidden_call_from_a_device_thread_kills_the_process",
            case,
        );
        assert_eq!(
            st.signal(),
            Some(libc::SIGSYS),
            "{case}: the child was not killed by SIGSYS: {st:?}"
        );
    }
}

#[test]
fn what_a_running_vm_does_passes_the_filter() {
    if let Ok(case) = std::env::var(CASE) {
        run_case(&case);
    }
    let st = child("what_a_running_vm_does_passes_the_filter", "allowed");
    assert!(st.success(), "{st:?}");
}

#[test]
fn perimeter_runs_its_guests_under_the_filter_unless_told_not_to() {
    use common::*;
    if std::env::var(CASE).is_ok()
        || !kvm_present("perimeter_runs_its_guests_under_the_filter_unless_told_not_to")
    {
        return;
    }
    for (flag, confined) in [(None, true), (Some("--no-seccomp"), false)] {
        let mut args = vec!["run", "--workload", "tx:4K:1M", "--timeout", "30"];
        args.extend(flag);
        // The phase timings say when the filter went on.
        let o = Command::new(env!("CARGO_BIN_EXE_perimeter"))
            .args(&args)
            .env("PERIMETER_TIMING", "1")
            .output()
            .expect("perimeter runs");
        let err = text(&o.stderr);
        assert_eq!(status(&o), 0, "{flag:?}: {err}");
        assert_eq!(
            err.contains("seccomp filter installed"),
            confined,
            "{flag:?}: {err}"
        );
    }
}
