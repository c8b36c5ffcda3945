//! `perimeter`: boot a guest under KVM and exit with its status.
//!
//! Exit statuses: the guest's own exit code (0–119); 120 bad command line or input; 121 host
//! failure (no KVM, ...); 122 guest crash; 123 guest exit code above 119; 124 timeout.

use clap::{Args, Parser, Subcommand};
use device_model::console::backend::{FaultSpec, PortSpec, parse_fault};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::error::STATUS_BAD_INPUT;
use vmm::{Kernel, VmConfig};

/// perimeter: a KVM virtual machine monitor whose virtio-console device is built from
/// multithreaded STREAMS. Without a command it runs `perimeter run` with the defaults, which
/// boots the built-in guest.
///
/// Exit status: the guest's exit code (0-119); 120 bad arguments or input files; 121 host failure
/// (for example no /dev/kvm); 122 guest crash; 123 guest exit code above 119; 124 timeout.
#[derive(Parser, Debug)]
#[command(name = "perimeter", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a guest, print its console output, and exit with its exit code.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Guest image to boot: a static 64-bit x86 ELF, entered in long mode at its entry point on
    /// every vCPU (rdi = boot parameters, rsi = CPU index). Default: the guest built from
    /// guest-driver/ and embedded in this binary.
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,

    /// Number of vCPUs, 1 to 8. Each runs on its own host thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u32,

    /// Guest RAM in MiB, 4 to 3072 (RAM ends below the MMIO hole at 3 GiB). The image and its
    /// heap must fit: the error says how much it needs.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    memory: u64,

    /// Guest command line. The built-in guest reads `workload=NAME[:ARG]`: boot (default),
    /// exit:N, panic, fault, ud, hang, uart, svc:N, vd-echo[:BYTES] (the crates.io
    /// virtio-drivers console echoes BYTES received on port 0).
    #[arg(long, value_name = "STR", default_value = "")]
    cmdline: String,

    /// Stop the guest after SECS seconds (fractions allowed) and exit with status 124.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_negative_numbers = true)]
    timeout: Option<Duration>,

    /// A virtio-console port, repeatable; the first is port 0. Without any, port 0 is the
    /// console on stdio. KIND: stdio | socket:PATH (listen; clients may come and go) |
    /// connect:PATH | pty (its path is printed; window size reaches the guest) |
    /// file:OUT[:IN] | null (discard, count, checksum) | pattern (deterministic source, for
    /// benchmarks). `console` marks a console port; `modules=a+b` pushes STREAMS modules
    /// (pass, crlf) from the head down.
    #[arg(long = "port", value_name = "name=NAME,backend=KIND[,console][,modules=a+b]",
          value_parser = PortSpec::parse)]
    ports: Vec<PortSpec>,

    /// Host-side buffer exhaustion in the console's STREAMS pool, repeatable:
    /// allocb=every:N (every Nth allocation fails), allocb=rate:P[:SEED] (each fails with
    /// probability P), pool=BYTES (the pool holds at most BYTES). Nothing is lost: the device
    /// retries through qbufcall.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,

    /// At exit, print per-port console statistics on stderr: bytes and buffers each way,
    /// allocation failures, bufcall retries, kicks, interrupts sent and suppressed, drops.
    #[arg(long)]
    stats: bool,

    /// With --stats: print the statistics as one JSON document on stdout instead.
    #[arg(long, requires = "stats")]
    json: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("{s} must be more than 0 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl RunArgs {
    fn config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.map_or(Kernel::Embedded, Kernel::File),
            vcpus: self.vcpus,
            memory_mib: self.memory,
            cmdline: self.cmdline,
            timeout: self.timeout,
            ports: if self.ports.is_empty() {
                vec![PortSpec::default_console()]
            } else {
                self.ports
            },
            faults: self.faults,
        }
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            kernel: None,
            vcpus: 1,
            memory: 64,
            cmdline: String::new(),
            timeout: None,
            ports: Vec::new(),
            faults: Vec::new(),
            stats: false,
            json: false,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "perimeter: {} (see perimeter --help)",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(STATUS_BAD_INPUT);
        }
    };
    let Command::Run(args) = cli.command.unwrap_or(Command::Run(RunArgs::default()));
    let (stats, json) = (args.stats, args.json);
    match vmm::vm::run(&args.config()) {
        Ok(report) => {
            let c = &report.console;
            if stats && json {
                println!("{}", c.json());
            } else if stats {
                eprint!("{}", c.table());
            }
            for p in &c.ports {
                if p.pending_out_bytes > 0 || p.drops > 0 {
                    eprintln!(
                        "perimeter: port {}: {} bytes of guest output could not be delivered to {}, {} dropped",
                        p.name, p.pending_out_bytes, p.backend, p.drops
                    );
                }
            }
            if let Some(reason) = report.outcome.reason() {
                eprintln!("perimeter: {reason}");
            }
            ExitCode::from(report.outcome.status())
        }
        Err(e) => {
            eprintln!("perimeter: {e}");
            ExitCode::from(e.status())
        }
    }
}
