//! Boots real KVM guests through the `perimeter` binary and checks what comes out.
//!
//! These need `/dev/kvm`. Where it is missing each test says so on stderr (not captured) and
//! passes without running; where it is present (CI's runners) they always run.

mod common;

use common::*;

#[test]
fn default_guest_boots_and_exits_0() {
    if !kvm_present("default_guest_boots_and_exits_0") {
        return;
    }
    // What `cargo run --release` does: the selftest on the default ports.
    let o = perimeter(&[]);
    let out = text(&o.stdout);
    assert_eq!(status(&o), 0, "stdout: {out}\nstderr: {}", text(&o.stderr));
    assert!(
        out.contains("perimeter guest: 1 vCPU(s), 64 MiB RAM"),
        "{out}"
    );
    // The guest drove the virtio-rng through the virtio-mmio transport: ioeventfd notify,
    // used ring, MSI through an irqfd.
    assert!(out.contains("virtio-rng: 64 bytes (not all zero)"), "{out}");
    assert!(out.contains("3 MMIO device(s)"), "{out}");
    // The STREAMS driver found the default ports (printed through EMERG_WRITE on port 0).
    assert!(
        out.contains("virtio-console: 4 port(s): console (console), echo, sink, source"),
        "{out}"
    );
    assert!(out.contains("selftest: ok\n"), "{out}");
    // The results table, each check passed (tx checked by the host against its CRC).
    for row in ["pingpong", "echo-stream", "tx", "rx"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row: {out}"));
        if row != "pingpong" {
            assert!(line.ends_with("ok"), "{line}");
        }
    }
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
}

#[test]
fn test_interrupt_reaches_every_vcpu_and_every_vcpu_runs_code() {
    if !kvm_present("test_interrupt_reaches_every_vcpu_and_every_vcpu_runs_code") {
        return;
    }
    for vcpus in ["2", "4"] {
        let o = perimeter(&[
            "run",
            "--vcpus",
            vcpus,
            "--workload",
            "boot",
            "--timeout",
            "30",
        ]);
        let out = text(&o.stdout);
        assert_eq!(status(&o), 0, "stdout: {out}\nstderr: {}", text(&o.stderr));
        let n: usize = vcpus.parse().unwrap();
        assert!(out.contains(&format!("{n} vCPU(s)")), "{out}");
        // Each line is printed only after that CPU took its MSI-routed test interrupt.
        for cpu in 0..n {
            let line = format!("cpu {cpu}: online, x2APIC ID {cpu}, test irq ");
            assert!(out.contains(&line), "cpu {cpu}: {out}");
        }
        assert!(!out.contains(&format!("cpu {n}:")), "{out}");
    }
}

#[test]
fn panicking_guest_exits_101_with_its_message_on_stderr() {
    if !kvm_present("panicking_guest_exits_101_with_its_message_on_stderr") {
        return;
    }
    let o = perimeter(&["run", "--cmdline", "workload=panic", "--timeout", "30"]);
    assert_eq!(status(&o), 101);
    let err = text(&o.stderr);
    assert!(
        err.contains("guest panicked on cpu 0") && err.contains("panics on purpose"),
        "{err}"
    );
}

#[test]
fn guest_exit_codes_pass_through_and_out_of_range_ones_do_not() {
    if !kvm_present("guest_exit_codes_pass_through_and_out_of_range_ones_do_not") {
        return;
    }
    assert_eq!(
        status(&perimeter(&["run", "--cmdline", "workload=exit:7"])),
        7
    );
    let o = perimeter(&["run", "--cmdline", "workload=exit:200"]);
    assert_eq!(status(&o), 123);
    assert!(
        text(&o.stderr).contains("exited with code 200"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn guest_faults_are_crashes_with_a_one_line_reason() {
    if !kvm_present("guest_faults_are_crashes_with_a_one_line_reason") {
        return;
    }
    let o = perimeter(&["run", "--cmdline", "workload=fault", "--timeout", "30"]);
    assert_eq!(status(&o), 122);
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("#PF") && err.contains("faulting address 0x1000000000"),
        "{err}"
    );

    let o = perimeter(&[
        "run",
        "--cmdline",
        "workload=ud",
        "--vcpus",
        "2",
        "--timeout",
        "30",
    ]);
    assert_eq!(status(&o), 122);
    assert!(
        text(&o.stderr).contains("#UD (vector 6"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn timeout_stops_a_hung_guest_with_status_124() {
    if !kvm_present("timeout_stops_a_hung_guest_with_status_124") {
        return;
    }
    let t = std::time::Instant::now();
    let o = perimeter(&[
        "run",
        "--cmdline",
        "workload=hang",
        "--vcpus",
        "2",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(status(&o), 124);
    assert!(
        text(&o.stderr).contains("did not exit within 0.5 s"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        t.elapsed().as_secs() < 20,
        "every thread was stopped and joined promptly"
    );
}

#[test]
fn bad_input_gives_status_120_and_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("perimeter-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("not-elf");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let script = script.to_str().unwrap();
    // Only a setup header's signature: a Linux image to perimeter, but not a loadable one.
    let fake_bz = dir.join("bzImage");
    let mut bytes = vec![0u8; 4096];
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&fake_bz, bytes).unwrap();
    let fake_bz = fake_bz.to_str().unwrap();
    let cases: [(&[&str], &str); 22] = [
        (
            &["run", "--kernel", "/nonexistent/kernel"],
            "cannot read kernel /nonexistent/kernel",
        ),
        (&["run", "--kernel", script], "not an ELF file"),
        (
            &["run", "--initrd", script],
            "--initrd is for Linux kernels, and the embedded guest is not one",
        ),
        (
            &[
                "run",
                "--kernel",
                fake_bz,
                "--initrd",
                "/nonexistent/initrd",
            ],
            "cannot read initrd /nonexistent/initrd",
        ),
        (
            &["run", "--kernel", fake_bz, "--vcpus", "2"],
            "perimeter boots Linux on one vCPU",
        ),
        (
            &["run", "--vcpus", "2", "--console-irq-vcpu", "2"],
            "--console-irq-vcpu 2: the VM has 2 vCPU(s), numbered from 0",
        ),
        (&["run", "--kernel", fake_bz], "not a loadable bzImage"),
        (&["run", "--memory", "2"], "--memory 2 MiB is out of range"),
        (&["run", "--vcpus", "0"], "--vcpus 0 is out of range"),
        (
            &["run", "--timeout", "-1"],
            "-1 must be more than 0 seconds",
        ),
        (&["run", "--bogus"], "unexpected argument '--bogus'"),
        (
            &["run", "--log-level", "loud"],
            "[possible values: off, error, warn, info, debug, trace]",
        ),
        (
            &["--log-file", "/nonexistent/dir/log", "run"],
            "--log-file /nonexistent/dir/log: No such file or directory",
        ),
        (&["fly"], "unrecognized subcommand 'fly'"),
        (
            &["run", "--port", "name=a,backend=tcp:1"],
            "unknown backend",
        ),
        (&["run", "--port", "backend=null"], "name=NAME"),
        (
            &[
                "run",
                "--port",
                "name=a,backend=null",
                "--port",
                "name=a,backend=null",
            ],
            "two ports are named \"a\"",
        ),
        (&["run", "--fault", "allocb=rate:1.5"], "0 <= P <= 1"),
        (
            &["run", "--guest-fault", "pool=100"],
            "expected allocb=every:N",
        ),
        (&["run", "--guest-fault", "allocb=rate:2"], "0 <= P <= 1"),
        (&["run", "--workload", "tx 1"], "without spaces"),
        (
            &["run", "--port", "name=s,backend=socket:/nonexistent/dir/s"],
            "port s: cannot listen on /nonexistent/dir/s",
        ),
    ];
    for (args, needle) in cases {
        let o = perimeter(args);
        let err = text(&o.stderr);
        assert_eq!(status(&o), 120, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn workloads_ports_and_paths_are_checked_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("perimeter-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // A live listener (as another VMM's port would be) and an output file with content.
    let live = p("live.sock");
    let listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let out = p("out.txt");
    std::fs::write(&out, "keep me").unwrap();
    let sock = p("a.sock");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--workload".into(), "bogus".into()],
            "no workload is named",
        ),
        (
            vec!["--workload".into(), "tx:abc".into()],
            "expected tx:SIZE",
        ),
        (
            vec!["--workload".into(), "tx:0:1M".into()],
            "SIZE \"0\" is out of range",
        ),
        (
            vec!["--workload".into(), "echo:-1".into()],
            "is not a number",
        ),
        (
            vec!["--workload".into(), "exit:-1".into()],
            "is not a number",
        ),
        (
            vec![
                "--port".into(),
                format!("name=a,backend=socket:{sock}"),
                "--port".into(),
                format!(
                    "name=b,backend=socket:{}/../{}/a.sock",
                    dir.display(),
                    dir.file_name().unwrap().to_str().unwrap()
                ),
            ],
            "both use",
        ),
        (
            vec![
                "--port".into(),
                format!("name=a,backend=socket:{sock}"),
                "--control".into(),
                sock.clone(),
            ],
            "uses that path",
        ),
        (
            vec!["--port".into(), format!("name=a,backend=socket:{live}")],
            "another process is listening on it",
        ),
        (
            vec!["--control".into(), live.clone()],
            "another process is listening on it",
        ),
        (
            vec![
                "--port".into(),
                format!("name=a,backend=file:{out}:{}", p("missing")),
            ],
            "cannot open",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["run".to_string(), "--timeout".into(), "30".into()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = perimeter(&all);
        let err = text(&o.stderr);
        assert_eq!(status(&o), 120, "{all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(
            !text(&o.stdout).contains("perimeter guest"),
            "{all:?}: no guest booted"
        );
    }
    assert!(
        std::path::Path::new(&live).exists(),
        "the live socket is kept"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_every_flag_of_run() {
    let o = perimeter(&["run", "--help"]);
    assert_eq!(status(&o), 0);
    let out = text(&o.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--vcpus",
        "--memory",
        "--cmdline",
        "--workload",
        "--guest-fault",
        "--timeout",
        "--port",
        "--fault",
        "--stats",
        "--json",
    ] {
        assert!(out.contains(flag), "{flag}: {out}");
    }
    for usage in guest_abi::workload::usages() {
        assert!(out.contains(usage), "{usage}: {out}");
    }
}

#[test]
fn port_io_reaches_the_8250_and_the_debug_exit_port() {
    if !kvm_present("port_io_reaches_the_8250_and_the_debug_exit_port") {
        return;
    }
    let o = perimeter(&["run", "--cmdline", "workload=uart", "--timeout", "30"]);
    assert_eq!(status(&o), 0, "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hello from COM1\n");
    assert_eq!(
        status(&perimeter(&["run", "--cmdline", "workload=pio-exit:5"])),
        5
    );
}

#[test]
fn a_reader_that_goes_away_does_not_crash_perimeter() {
    if !kvm_present("a_reader_that_goes_away_does_not_crash_perimeter") {
        return;
    }
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // `perimeter run | head -1`: the results table meets a closed pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["run", "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("perimeter guest:"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The CPUs this test may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, written by the kernel up to its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    assert_eq!(
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) },
        0
    );
    // SAFETY: every index is below the set's size in bits.
    (0..8 * size_of::<libc::cpu_set_t>())
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// `perimeter run ARGS`, started on exactly `cpus`, with stdout and stderr piped.
fn perimeter_on(cpus: &[usize], args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let cpus = cpus.to_vec();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_perimeter"));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure builds a cpu_set_t on the stack and makes one
    // system call; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cpus {
                libc::CPU_SET(c, &mut set);
            }
            match libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    cmd.spawn().expect("perimeter starts")
}

/// Each thread of process `pid`: its name and the CPUs it may run on (`Cpus_allowed_list`).
fn threads_of(pid: u32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .map(|task| {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or("")
                .trim()
                .to_string();
            (comm.trim().to_string(), list)
        })
        .collect()
}

#[test]
fn pinned_vcpus_run_alone_and_every_other_thread_on_the_rest() {
    let test = "pinned_vcpus_run_alone_and_every_other_thread_on_the_rest";
    if !kvm_present(test) {
        return;
    }
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("\n*** SKIPPED {test}: this test may use only one CPU ***\n");
        return;
    }
    let (vcpu_cpu, rest) = (cpus[0], cpus[1]);
    let mut child = perimeter_on(
        &[vcpu_cpu, rest],
        &[
            "run",
            "--pin-vcpus",
            "--workload",
            "pingpong:64:1000000:echo",
            "--timeout",
            "60",
        ],
    );
    // The vCPU threads start last: once vcpu0 runs, every thread of the run exists.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let threads = loop {
        let threads = threads_of(child.id());
        if threads.iter().any(|(c, _)| c == "vcpu0") || std::time::Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(threads.iter().any(|(c, _)| c == "vcpu0"), "{threads:?}");
    assert!(threads.iter().any(|(c, _)| c == "tx-poll"), "{threads:?}");
    for (comm, list) in &threads {
        // KVM's own kernel workers follow the process's first thread, not perimeter's choice.
        if comm.starts_with("kvm") {
            continue;
        }
        let want = if comm == "vcpu0" { vcpu_cpu } else { rest };
        assert_eq!(*list, want.to_string(), "{comm}: {threads:?}");
    }
}

#[test]
fn pinning_without_a_spare_cpu_is_refused_in_one_line() {
    if !kvm_present("pinning_without_a_spare_cpu_is_refused_in_one_line") {
        return;
    }
    let cpu = allowed_cpus()[0];
    let o = perimeter_on(&[cpu], &["run", "--pin-vcpus", "--workload", "hello"])
        .wait_with_output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(status(&o), 120, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("perimeter: --pin-vcpus: 1 vCPU(s) need 2 CPUs"),
        "{err}"
    );
    assert!(
        !text(&o.stdout).contains("perimeter guest"),
        "nothing booted"
    );
}

#[test]
fn the_log_follows_rust_log_or_log_level_and_goes_to_a_file_when_asked() {
    if !kvm_present("the_log_follows_rust_log_or_log_level_and_goes_to_a_file_when_asked") {
        return;
    }
    let run = |env: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_perimeter"));
        c.env_remove("RUST_LOG");
        if let Some(spec) = env {
            c.env("RUST_LOG", spec);
        }
        // The self-test (the default workload) brings the console up.
        let o = c.arg("run").args(args).output().expect("perimeter runs");
        assert_eq!(status(&o), 0, "{args:?}: {}", text(&o.stderr));
        text(&o.stderr)
    };
    let booting = "INFO  perimeter] booting the built-in guest: 1 vCPU(s)";
    assert!(!run(None, &[]).contains("INFO"), "warn by default");
    assert!(run(Some("info"), &[]).contains(booting));
    assert!(run(Some("device_model=debug"), &[]).contains("device type 3): activated"));
    assert!(
        !run(Some("info"), &["--log-level", "off"]).contains("INFO"),
        "--log-level wins over RUST_LOG"
    );
    let dir = common::tmp_dir("log-file");
    let file = dir.join("perimeter.log");
    let f = file.to_str().unwrap();
    for _ in 0..2 {
        let err = run(None, &["--log-level", "debug", "--log-file", f]);
        assert!(!err.contains("DEBUG") && !err.contains("INFO"), "{err}");
    }
    let log = std::fs::read_to_string(&file).unwrap();
    assert_eq!(log.matches(booting).count(), 2, "appended: {log}");
    assert!(log.contains("seccomp filter installed"), "{log}");
    assert!(log.contains("the run ended with status 0"), "{log}");
    assert!(log.lines().all(|l| l.starts_with("[20")), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let o = perimeter(&["--version"]);
    assert_eq!(status(&o), 0);
    let out = text(&o.stdout);
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|g| g.status.success())
        .map(|g| text(&g.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        out,
        format!("perimeter {} (commit {head})\n", env!("CARGO_PKG_VERSION"))
    );
}
