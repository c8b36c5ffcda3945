//! `perimeter`: boot a guest under KVM and exit with its status.
//!
//! Exit statuses: the guest's own exit code (0–119); 120 bad command line or input; 121 host
//! failure (no KVM, ...); 122 guest crash; 123 guest exit code above 119; 124 timeout; 125 the
//! guest succeeded but a result the host can check (a `tx` checksum) did not match.
//!
//! The command line itself is [`cli`]; this file runs what it asks for.

mod cli;
mod logger;

use clap::Parser;
use cli::{BenchArgs, Cli, Command, CtlArgs, RunArgs};
use std::process::ExitCode;
use std::time::Duration;
use vmm::error::STATUS_BAD_INPUT;

/// Exit status when the guest succeeded but the host's check of its results failed.
const STATUS_RESULT_MISMATCH: u8 = 125;

/// `perimeter ctl`: one request, its answer on stdout.
fn ctl(args: &CtlArgs) -> ExitCode {
    match vmm::control::client::request(&args.socket, &args.request) {
        Ok((ok, answer)) => {
            stdout(&format!("{answer}\n"));
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("perimeter ctl: {e}");
            ExitCode::from(e.status())
        }
    }
}

fn bench(args: BenchArgs) -> ExitCode {
    if let Some(duration) = args.soak {
        return soak(&args, duration);
    }
    if args.linux {
        return bench_linux(&args);
    }
    if let Some(side) = args.fault_sweep {
        return fault_sweep(&args, side);
    }
    let (out, vs_qemu) = (args.out.clone(), args.vs_qemu);
    match vmm::bench::run(&args.options()) {
        Ok(report) => {
            stdout(&report.table);
            let advantage = if vs_qemu { ", advantage.svg" } else { "" };
            eprintln!(
                "perimeter: results.json, throughput.svg, latency.svg{advantage} are in {}",
                out.display()
            );
            for p in &report.perimeter_problems {
                eprintln!("perimeter: {p}");
            }
            ExitCode::from(vmm::bench::status(&report))
        }
        Err(e) => {
            eprintln!("perimeter bench: {e}");
            ExitCode::from(e.status())
        }
    }
}

fn bench_linux(args: &BenchArgs) -> ExitCode {
    let (built_kernel, built_initrd) = vmm::linux::built_artifacts();
    let kernel = args.kernel.clone().unwrap_or(built_kernel);
    let initrd = args.initrd.clone().unwrap_or(built_initrd);
    for f in [&kernel, &initrd] {
        if !f.exists() {
            eprintln!(
                "perimeter bench: {} is missing (images/linux/build-kernel and build-initramfs make it)",
                f.display()
            );
            return ExitCode::from(STATUS_BAD_INPUT);
        }
    }
    let qemu = if args.vs_qemu {
        match vmm::bench::find_qemu(args.qemu.as_deref()) {
            Ok(q) => Some(q),
            Err(e) => {
                eprintln!("perimeter bench: {e}");
                return ExitCode::from(e.status());
            }
        }
    } else {
        None
    };
    let perimeter = match this_binary() {
        Ok(p) => p,
        Err(status) => return status,
    };
    let opts = vmm::bench::linux::LinuxBenchOptions {
        perimeter,
        qemu,
        kernel,
        initrd,
        runs: args.runs.map_or(3, usize::from),
        bytes: 256 * 1024,
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout.max(600)),
    };
    match vmm::bench::linux::run(&opts) {
        Ok(table) => {
            stdout(&table);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perimeter bench: {e}");
            ExitCode::from(e.status())
        }
    }
}

/// This executable, which the benchmarks run as their VMM.
fn this_binary() -> Result<std::path::PathBuf, ExitCode> {
    std::env::current_exe().map_err(|e| {
        eprintln!("perimeter bench: cannot find this binary: {e}");
        ExitCode::from(vmm::error::STATUS_HOST_FAILURE)
    })
}

fn fault_sweep(args: &BenchArgs, side: vmm::bench::faults::Side) -> ExitCode {
    let perimeter = match this_binary() {
        Ok(p) => p,
        Err(status) => return status,
    };
    let opts = vmm::bench::faults::SweepOptions {
        side,
        rates: args.rates.clone(),
        seed: args.seed,
        perimeter,
        out: args.out.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    match vmm::bench::faults::run(&opts) {
        Ok((table, runs)) => {
            stdout(&table);
            eprintln!(
                "perimeter: faults.json, faults.svg are in {}",
                args.out.display()
            );
            let failed: Vec<_> = runs.iter().filter(|r| r.problem.is_some()).collect();
            for r in &failed {
                eprintln!(
                    "perimeter: rate {}: {}",
                    r.rate,
                    r.problem.as_deref().unwrap_or_default()
                );
            }
            ExitCode::from(u8::from(!failed.is_empty()))
        }
        Err(e) => {
            eprintln!("perimeter bench: {e}");
            ExitCode::from(e.status())
        }
    }
}

fn soak(args: &BenchArgs, duration: Duration) -> ExitCode {
    let perimeter = match this_binary() {
        Ok(p) => p,
        Err(status) => return status,
    };
    let opts = vmm::bench::soak::SoakOptions {
        duration,
        ports: args.ports.into(),
        fault_rate: args.fault_rate,
        seed: args.seed,
        perimeter,
        out: Some(args.out.clone()),
    };
    match vmm::bench::soak::run(&opts) {
        Ok(report) => {
            stdout(&report.table);
            for p in &report.problems {
                eprintln!("perimeter: soak: {p}");
            }
            ExitCode::from(u8::from(!report.problems.is_empty()))
        }
        Err(e) => {
            eprintln!("perimeter bench: {e}");
            ExitCode::from(e.status())
        }
    }
}

/// Writes to standard output; a reader that went away (`| head`) is not an error of the run.
fn stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// For `--json`: keeps the process's standard output for the document alone and points file
/// descriptor 1 at standard error, so that everything else the run writes to stdout (the
/// guest's lines, COM1, a `stdio` port) goes to stderr. Returns the kept standard output.
fn json_stdout() -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::AsFd;
    std::io::stdout().flush()?;
    let kept = rustix::io::dup(std::io::stdout().as_fd())?;
    rustix::stdio::dup2_stdout(std::io::stderr().as_fd())?;
    Ok(std::fs::File::from(kept))
}

fn main() -> ExitCode {
    // A panic must not leave a `stdio` port's terminal in raw mode.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        device_model::console::backend::terminal::restore();
        report(info);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first paragraph (a missing argument is listed under it).
            let text = e.render().to_string();
            let words: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = words.join(" ");
            eprintln!(
                "perimeter: {} (see perimeter --help)",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(STATUS_BAD_INPUT);
        }
    };
    if let Err(e) = logger::init(cli.log_level, cli.log_file.as_deref()) {
        let path = cli
            .log_file
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display();
        eprintln!("perimeter: --log-file {path}: {e}");
        return ExitCode::from(STATUS_BAD_INPUT);
    }
    let args = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => args,
        Command::Bench(args) => return bench(args),
        Command::Ctl(args) => return ctl(&args),
    };
    let (stats, json) = (args.stats, args.json);
    let config = args.config();
    let mut json_out = match json.then(json_stdout).transpose() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("perimeter: --json: cannot set standard output aside: {e}");
            return ExitCode::from(vmm::error::STATUS_HOST_FAILURE);
        }
    };
    log::info!(
        "booting {}: {} vCPU(s), {} MiB, {} console port(s){}",
        match &config.kernel {
            vmm::Kernel::Embedded => "the built-in guest".to_string(),
            vmm::Kernel::File(p) => p.display().to_string(),
        },
        config.vcpus,
        config.memory_mib,
        config.ports.len(),
        if config.seccomp { "" } else { ", no seccomp" }
    );
    match vmm::vm::run(&config) {
        Ok(report) => {
            log::info!(
                "the run ended with status {}{}",
                report.outcome.status(),
                report
                    .outcome
                    .reason()
                    .map_or(String::new(), |r| format!(": {r}"))
            );
            let c = &report.console;
            if let Some(out) = &mut json_out {
                /// The `--json` document: the console's statistics and the guest's results.
                #[derive(serde::Serialize)]
                struct RunDocument<'a> {
                    #[serde(flatten)]
                    console: &'a device_model::console::ConsoleStats,
                    serial: &'a vmm::devices::serial::SerialStats,
                    results: &'a [vmm::results::GuestResult],
                }
                let doc = RunDocument {
                    console: c,
                    serial: &report.serial,
                    results: &report.results,
                };
                let line = serde_json::to_string(&doc).expect("plain data serializes");
                use std::io::Write;
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
            } else {
                if !report.results.is_empty() {
                    stdout(&vmm::results::table(&report.results));
                }
                if stats {
                    eprint!("{}", c.table());
                    let s = &report.serial;
                    eprintln!(
                        "COM1: {} bytes out ({} lost), {} bytes in, {} client(s)",
                        s.out_bytes, s.out_lost, s.in_bytes, s.connects
                    );
                }
            }
            let mismatch = report.results.iter().any(|r| r.host_check == "MISMATCH");
            if mismatch {
                eprintln!("perimeter: a guest result does not match what the host received");
            }
            for p in &c.ports {
                if p.pending_in_bytes > 0 {
                    eprintln!(
                        "perimeter: port {}: {} bytes from {} were not delivered to the guest",
                        p.name, p.pending_in_bytes, p.backend
                    );
                }
                if p.pending_out_bytes > 0 || p.drops > 0 {
                    eprintln!(
                        "perimeter: port {}: {} bytes of guest output could not be delivered to {}, {} dropped",
                        p.name, p.pending_out_bytes, p.backend, p.drops
                    );
                }
            }
            if report.serial.out_lost > 0 {
                eprintln!(
                    "perimeter: COM1: {} bytes of guest output were dropped (nobody took them)",
                    report.serial.out_lost
                );
            }
            if let Some(reason) = report.outcome.reason() {
                eprintln!("perimeter: {reason}");
            }
            match report.outcome.status() {
                0 if mismatch => ExitCode::from(STATUS_RESULT_MISMATCH),
                status => ExitCode::from(status),
            }
        }
        Err(e) => {
            eprintln!("perimeter: {e}");
            ExitCode::from(e.status())
        }
    }
}
