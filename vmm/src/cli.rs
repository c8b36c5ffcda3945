//! The command line: `perimeter [run] ...` and `perimeter bench ...`, parsed by clap, and
//! how each turns into the library's configuration ([`VmConfig`], the bench's options).

use clap::{Args, Parser, Subcommand};
use device_model::console::DEFAULT_TX_POLL;
use device_model::console::backend::{FaultSpec, PortSpec, parse_fault};
use std::path::PathBuf;
use std::time::Duration;
use vmm::devices::serial::SerialSpec;
use vmm::{Kernel, VmConfig};

/// perimeter: a KVM virtual machine monitor whose virtio-console device is built from
/// multithreaded STREAMS. Without a command it runs `perimeter run` with the defaults, which
/// boots the built-in guest.
///
/// Exit status: the guest's exit code (0-119); 120 bad arguments or input files; 121 host failure
/// (for example no /dev/kvm); 122 guest crash; 123 guest exit code above 119; 124 timeout; 125
/// the guest succeeded but the host's check of its results failed.
/// `perimeter --version`: the crate's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PERIMETER_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(name = "perimeter", version = VERSION, about, long_about)]
pub(crate) struct Cli {
    /// How much to log, to standard error or --log-file: off, error, warn, info, debug or
    /// trace. Without it RUST_LOG decides (env_logger's syntax, such as `device_model=debug`);
    /// without both, warn: what the device refused or lost.
    #[arg(long, global = true, value_name = "LEVEL",
          value_parser = level_parser())]
    pub(crate) log_level: Option<log::LevelFilter>,
    /// Append the log to FILE instead of writing it to standard error.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) log_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// `--workload`'s long help: what the main workloads do, then every workload the guest's
/// table has, so that the list cannot miss one.
fn workload_help() -> String {
    let all: Vec<&str> = guest_abi::workload::usages().collect();
    format!(
        "What the built-in guest does. Its STREAMS virtio-console driver runs: selftest (the \
         default: opens every port; round trips and a stream through `echo`, a checksummed \
         stream to `sink`, a checked stream from `source`), echo (echo every port), tx (guest \
         to host, CRC checked by the host), rx (host pattern to guest, checked in the guest), \
         pingpong (round-trip latency), fairness (tx on many ports at once, each port's share), \
         tx-idle (a writer that stops with its buffers at the device), vd-echo (the crates.io \
         virtio-drivers console), hostile (the guest breaks its console's rings, registers and \
         control messages case by case; see RELIABILITY.md). Sizes take K, M, G.\n\n\
         Every workload: {}.",
        all.join(", ")
    )
}

/// `--log-level`: one of [`crate::logger::LEVELS`], listed in the error when it is not.
fn level_parser() -> impl clap::builder::TypedValueParser<Value = log::LevelFilter> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(crate::logger::LEVELS)
        .map(|s| s.parse::<log::LevelFilter>().expect("one of LEVELS"))
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Boot a guest, print its console output, and exit with its exit code.
    Run(RunArgs),
    /// Run the benchmark matrix (tx, rx, pingpong at 64 B, 4 KiB and 64 KiB; tx on 4 and 16
    /// ports; the console under a slow reader; boot) and print a table; write results.json
    /// and SVG plots into --out. Every transfer is checked (bytes delivered / sent, CRCs).
    /// Exit status 1 when a perimeter run failed or lost data.
    Bench(BenchArgs),
    /// Send one request to a running perimeter's control socket (`run --control PATH`) and
    /// print its answer, one line of JSON: ports (name, backend, path, state, counters),
    /// stats, add NAME, remove NAME, shutdown. Exit status 0 when the answer is ok, 1 when
    /// it says why not, 120 for a request that is not one or a socket nobody serves.
    Ctl(CtlArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CtlArgs {
    /// The control socket's path.
    #[arg(value_name = "SOCKET")]
    pub(crate) socket: PathBuf,
    /// The request: ports, stats, add NAME, remove NAME or shutdown.
    #[arg(value_name = "REQUEST", required = true, num_args = 1..)]
    pub(crate) request: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("long_runs").args(["soak", "fault_sweep"])))]
pub(crate) struct BenchArgs {
    /// Also run every cell under QEMU (`qemu-system-x86_64 -M microvm`, the same guest image
    /// through its PVH entry, `virtio-serial-device` ports on the same host peers), runs
    /// interleaved, and print perimeter's advantage per cell.
    #[arg(long)]
    pub(crate) vs_qemu: bool,

    /// About a sixteenth of the data and one run per cell (under a minute without QEMU).
    #[arg(long)]
    pub(crate) quick: bool,

    /// Runs per cell and VMM; the table shows medians [default: 3, or 1 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) runs: Option<u16>,

    /// Only the cells whose name contains TEXT (repeatable), e.g. `--only pingpong`.
    #[arg(long, value_name = "TEXT")]
    pub(crate) only: Vec<String>,

    /// Folder for results.json, throughput.svg, latency.svg, advantage.svg (with --vs-qemu)
    /// and the guest image QEMU boots; for --soak, soak-memory.svg.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub(crate) out: PathBuf,

    /// The QEMU binary [default: qemu-system-x86_64 on PATH].
    #[arg(long, value_name = "FILE")]
    pub(crate) qemu: Option<PathBuf>,

    /// Guest image to boot under both VMMs [default: the embedded guest; with --linux the
    /// vmlinux images/linux/build-kernel made].
    #[arg(long, value_name = "FILE")]
    pub(crate) kernel: Option<PathBuf>,

    /// Instead of the matrix, the Linux test guest: its conformance program measures guest to
    /// host, host to guest, echo and 64-byte round trips through Linux's own virtio_console
    /// driver, and the kernel's time to /init (see images/linux/). With --vs-qemu also under
    /// QEMU's microvm, same kernel, initramfs and host peers. Slow where kernel code is
    /// emulated: about 4 minutes per run.
    #[arg(long, conflicts_with_all = ["quick", "only", "soak"])]
    pub(crate) linux: bool,

    /// The initramfs for --linux [default: the one images/linux/build-initramfs made].
    #[arg(long, value_name = "FILE", requires = "linux")]
    pub(crate) initrd: Option<PathBuf>,

    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub(crate) memory: u64,

    /// vCPUs of each perimeter run (1 to 8; QEMU boots this guest on one, so not with
    /// --vs-qemu).
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with_all = ["vs_qemu", "linux"],
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub(crate) vcpus: u32,

    /// perimeter's transmit polling after a notification, in µs (see `run --tx-poll-us`)
    /// [default: run's default].
    #[arg(long, value_name = "US")]
    pub(crate) tx_poll_us: Option<u64>,

    /// Do not pin. By default, when this process may use more CPUs than the guest has vCPUs,
    /// perimeter runs with `run --pin-vcpus` (each vCPU thread alone on one of the first
    /// CPUs, its other threads on the rest) and the host peers stay on the rest. QEMU runs
    /// unpinned either way: its vCPU thread pinned the same way made its round trips several
    /// times slower.
    #[arg(long)]
    pub(crate) no_pin: bool,

    /// Kill a run after SECS seconds and report it.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) timeout: u64,

    /// More guest command line for both VMMs: the guest's tuning knobs (poll_us=N,
    /// vcon.rxbuf=BYTES, vcon.rxbufs=N).
    #[arg(long, value_name = "STR", default_value = "")]
    pub(crate) cmdline: String,

    /// Instead of the matrix, a soak: one VM for MINUTES (fractions allowed) with every port
    /// echoing in the guest while host peers send seeded data in random chunks, pause at
    /// random and compare every byte that comes back; allocation failures injected on both
    /// sides; perimeter's memory sampled. Exit status 1 if anything differs, is lost or
    /// dropped, or memory keeps growing.
    #[arg(long, value_name = "MINUTES", value_parser = parse_minutes,
          conflicts_with_all = ["vs_qemu", "quick", "runs", "only", "qemu", "kernel"])]
    pub(crate) soak: Option<Duration>,

    /// Ports of a soak (1 to 31).
    #[arg(long, value_name = "N", default_value_t = 4, requires = "soak",
          value_parser = clap::value_parser!(u16).range(1..=31))]
    pub(crate) ports: u16,

    /// Probability of each injected allocation failure in a soak, host and guest side.
    #[arg(long, value_name = "P", default_value_t = 0.01, requires = "soak",
          value_parser = parse_probability)]
    pub(crate) fault_rate: f64,

    /// Seed of a soak's data, chunk sizes, pauses and faults, or of a fault sweep's faults.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "long_runs")]
    pub(crate) seed: u64,

    /// Instead of the matrix, a sweep of buffer exhaustion: the guest's selftest once per
    /// --rates, with allocb failing at that rate on the host side, the guest side or both;
    /// a table of failures and retries per side, wall time and checks, faults.json and
    /// faults.svg in --out. Exit status 1 if a check fails or anything is dropped.
    #[arg(long, value_name = "SIDE",
          conflicts_with_all = ["vs_qemu", "quick", "runs", "only", "qemu", "kernel", "linux", "soak"])]
    pub(crate) fault_sweep: Option<vmm::bench::faults::Side>,

    /// The fault sweep's allocb failure rates, probabilities from 0 to 1.
    #[arg(long, value_name = "LIST", default_value = "0,0.1,0.3,0.5,0.7,0.9",
          requires = "fault_sweep", value_delimiter = ',',
          value_parser = vmm::bench::faults::parse_rate)]
    pub(crate) rates: Vec<f64>,
}

fn parse_minutes(s: &str) -> Result<Duration, String> {
    let m: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of minutes"))?;
    if !(m.is_finite() && m > 0.0 && m <= 7.0 * 24.0 * 60.0) {
        return Err(format!("{s}: more than 0 and at most a week of minutes"));
    }
    Ok(Duration::from_secs_f64(m * 60.0))
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a probability"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s}: a probability is between 0 and 1"));
    }
    Ok(p)
}

impl BenchArgs {
    pub(crate) fn options(self) -> vmm::bench::BenchOptions {
        vmm::bench::BenchOptions {
            vs_qemu: self.vs_qemu,
            quick: self.quick,
            runs: self.runs.map(usize::from),
            only: self.only,
            out: self.out,
            qemu: self.qemu,
            kernel: self.kernel,
            memory_mib: self.memory,
            timeout: Duration::from_secs(self.timeout.max(1)),
            cmdline: self.cmdline,
            vcpus: self.vcpus,
            tx_poll_us: self.tx_poll_us,
            pin: !self.no_pin,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Guest image to boot: a static 64-bit x86 ELF, entered in long mode at its entry point on
    /// every vCPU (rdi = boot parameters, rsi = CPU index); or a Linux bzImage or vmlinux,
    /// booted on one vCPU with its console on COM1 (ttyS0) and the virtio console declared on
    /// its command line (see images/linux/). A Linux run ends when the guest reboots: status
    /// 0, or init's exit status when init exited, or 122 after a kernel panic. Default: the
    /// guest built from guest-driver/ and embedded in this binary.
    #[arg(long, value_name = "FILE")]
    pub(crate) kernel: Option<PathBuf>,

    /// Initial RAM disk for a Linux --kernel (an uncompressed cpio boots fastest where
    /// kernel code is emulated).
    #[arg(long, value_name = "FILE")]
    pub(crate) initrd: Option<PathBuf>,

    /// Enter a Linux vmlinux at its 64-bit ELF entry with a zero page (as a bzImage) rather
    /// than through its PVH entry.
    #[arg(long)]
    pub(crate) no_pvh: bool,

    /// Number of vCPUs, 1 to 8. Each runs on its own host thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) vcpus: u32,

    /// Guest RAM in MiB, 4 to 3072 (RAM ends below the MMIO hole at 3 GiB). The image and its
    /// heap must fit: the error says how much it needs.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub(crate) memory: u64,

    /// Guest command line, passed as it is (--workload and --guest-fault add to it). For
    /// Linux it follows perimeter's part: console=ttyS0 reboot=k panic=-1, the PVM host's
    /// CPU options, and virtio_mmio.device=... for the console.
    #[arg(long, value_name = "STR", default_value = "")]
    pub(crate) cmdline: String,

    /// What the built-in guest does (default selftest); --help lists every workload.
    #[arg(long, value_name = "NAME[:ARGS]", value_parser = parse_workload,
          long_help = workload_help())]
    pub(crate) workload: Option<String>,

    /// Buffer exhaustion inside the guest's STREAMS pool, repeatable: allocb=every:N or
    /// allocb=rate:P[:SEED]. The guest driver keeps going with fewer buffers and retries
    /// through qbufcall; nothing is lost.
    #[arg(long = "guest-fault", value_name = "SPEC", value_parser = parse_guest_fault)]
    pub(crate) guest_faults: Vec<String>,

    /// How long the console keeps polling its transmit rings after a notification once none
    /// moves, in µs: a guest writing meanwhile needs no notification. 0 turns polling off
    /// (the guest notifies whenever it finds a ring idle).
    #[arg(long, value_name = "US", default_value_t = DEFAULT_TX_POLL.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub(crate) tx_poll_us: u64,

    /// The vCPU that takes the console's interrupts (our guest; a Linux guest takes them on
    /// its interrupt pin). Our guest's workloads run on vCPU 0, so the default saves each
    /// interrupt a hop to another vCPU; another one makes every port's data paths run on two
    /// vCPUs at once.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) console_irq_vcpu: u32,

    /// Give each vCPU thread a host CPU of its own, the first --vcpus of the CPUs this process
    /// may run on (choose them with taskset), and keep perimeter's other threads on the rest.
    /// Needs at least one CPU more than --vcpus (exit status 120 otherwise). Two pinned VMs
    /// on the same CPUs get in each other's way: give each its own with taskset.
    #[arg(long)]
    pub(crate) pin_vcpus: bool,

    /// Stop the guest after SECS seconds (fractions allowed) and exit with status 124.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_negative_numbers = true)]
    pub(crate) timeout: Option<Duration>,

    /// A virtio-console port, repeatable; the first is port 0. Without any: console (stdio,
    /// a console port), echo (echo), sink (null), source (pattern). KIND: stdio |
    /// socket:PATH (listen; clients may come and go) | connect:PATH | pty (its path is
    /// printed; window size reaches the guest) | file:OUT[:IN] | null (discard, count,
    /// checksum) | pattern (deterministic source, for benchmarks) | echo (back to the guest). `console` marks a console port; `unplugged` leaves the port out until
    /// `add NAME` on --control; `modules=a+b` pushes STREAMS modules (pass, crlf) from the
    /// head down.
    #[arg(long = "port", value_name = "name=NAME,backend=KIND[,console][,unplugged][,modules=a+b]",
          value_parser = PortSpec::parse)]
    pub(crate) ports: Vec<PortSpec>,

    /// COM1 (the guest's 8250 UART, Linux's ttyS0): stdio (output on stdout; input from
    /// stdin unless a `stdio` port has it, a terminal in raw mode with Ctrl-A x to quit) |
    /// file:PATH (output only) | socket:PATH (listen; one client at a time, both ways) |
    /// null. Output a socket client is not there to take is dropped and counted (`serial`
    /// in --json); input is never dropped.
    #[arg(long, value_name = "KIND", default_value = "stdio", value_parser = SerialSpec::parse)]
    pub(crate) serial: SerialSpec,

    /// Host-side buffer exhaustion in the console's STREAMS pool, repeatable:
    /// allocb=every:N (every Nth allocation fails), allocb=rate:P[:SEED] (each fails with
    /// probability P), pool=BYTES (the pool holds at most BYTES). Nothing is lost: the device
    /// retries through qbufcall.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    pub(crate) faults: Vec<FaultSpec>,

    /// Listen on a UNIX socket for requests while the guest runs, one per line, as JSON or
    /// words, each answered by one line of JSON: ports (backends, paths, state, counters),
    /// stats, remove NAME (hot-remove a port: the guest's stream is hung up), add NAME
    /// (hot-add a removed or `unplugged` port), shutdown. `perimeter ctl` is its client.
    #[arg(long, value_name = "PATH")]
    pub(crate) control: Option<PathBuf>,

    /// Append the statistics (the --json document's, without the guest's results) to FILE
    /// as one JSON line every --metrics-every seconds and once more as the guest stops, each
    /// with its `time` and `uptime_ms`.
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics: Option<PathBuf>,

    /// How often --metrics writes a line, in seconds (fractions allowed; 0.01 to 86400).
    #[arg(long, value_name = "SECS", default_value = "1", requires = "metrics",
          value_parser = parse_timeout)]
    pub(crate) metrics_every: Duration,

    /// At exit, print per-port console statistics on stderr: bytes and buffers each way,
    /// allocation failures, bufcall retries, kicks, interrupts sent and suppressed, drops.
    #[arg(long)]
    pub(crate) stats: bool,

    /// Print the guest's results and the console statistics as one JSON document on stdout
    /// (instead of the results table; --stats then prints no table either). Stdout then
    /// carries that document alone: the guest's lines, COM1 and a `stdio` port write to
    /// stderr.
    #[arg(long)]
    pub(crate) json: bool,

    /// Run without the seccomp filter. By default, once the VM is set up, the process may
    /// make only the system calls a running VM needs (no opening files, no new programs, no
    /// network sockets); any other kills it with SIGSYS.
    #[arg(long)]
    pub(crate) no_seccomp: bool,
}

fn parse_workload(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(format!("{s:?}: a workload is NAME[:ARGS] without spaces"));
    }
    guest_abi::workload::check(s).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(s.to_string())
}

fn parse_guest_fault(s: &str) -> Result<String, String> {
    if !s.starts_with("allocb=") || s.contains(',') {
        return Err(format!(
            "{s:?}: expected allocb=every:N or allocb=rate:P[:SEED]"
        ));
    }
    parse_fault(s)?;
    Ok(s.to_string())
}

/// The guest command line: the user's, then `workload=` and `guest-fault=`.
fn guest_cmdline(base: &str, workload: Option<&str>, faults: &[String]) -> String {
    let mut words: Vec<String> = base.split_whitespace().map(String::from).collect();
    if let Some(w) = workload {
        words.push(format!("workload={w}"));
    }
    if !faults.is_empty() {
        words.push(format!("guest-fault={}", faults.join(",")));
    }
    words.join(" ")
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
    pub(crate) fn config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.map_or(Kernel::Embedded, Kernel::File),
            vcpus: self.vcpus,
            memory_mib: self.memory,
            cmdline: guest_cmdline(&self.cmdline, self.workload.as_deref(), &self.guest_faults),
            initrd: self.initrd,
            pvh: !self.no_pvh,
            timeout: self.timeout,
            ports: if self.ports.is_empty() {
                PortSpec::defaults()
            } else {
                self.ports
            },
            faults: self.faults,
            control: self.control,
            serial: self.serial,
            metrics: self.metrics,
            metrics_every: self.metrics_every,
            seccomp: !self.no_seccomp,
            tx_poll: Duration::from_micros(self.tx_poll_us),
            console_irq_vcpu: self.console_irq_vcpu,
            pin_vcpus: self.pin_vcpus,
        }
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            kernel: None,
            initrd: None,
            no_pvh: false,
            vcpus: 1,
            memory: 64,
            cmdline: String::new(),
            workload: None,
            guest_faults: Vec::new(),
            timeout: None,
            ports: Vec::new(),
            faults: Vec::new(),
            control: None,
            serial: SerialSpec::Stdio,
            metrics: None,
            metrics_every: Duration::from_secs(1),
            stats: false,
            json: false,
            no_seccomp: false,
            tx_poll_us: DEFAULT_TX_POLL.as_micros() as u64,
            console_irq_vcpu: 0,
            pin_vcpus: false,
        }
    }
}
