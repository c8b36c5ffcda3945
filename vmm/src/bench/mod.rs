//! `perimeter bench`: the benchmark matrix end to end, optionally side by side with QEMU.
//!
//! Each cell boots the built-in guest (or `--kernel`) with a workload and real host peers on
//! UNIX sockets ([`peer`]), under perimeter and, with `--vs-qemu`, under
//! `qemu-system-x86_64 -M microvm` booting the same image through its PVH entry ([`launch`]).
//! Runs of the two VMMs interleave so that the machine's drift hits both. Throughput and
//! latency are what the guest measured (TSC); boot is process start to first output byte.
//! Every transfer is checked: bytes delivered against bytes sent, CRCs, the guest's pattern
//! check ([`sample`]). Output: a table on stdout, `results.json`, and SVG plots ([`plot`]).
//! Instead of the matrix: the Linux guest ([`linux`]), a soak ([`soak`]), or a sweep of
//! buffer-exhaustion rates ([`faults`]).

pub mod faults;
pub mod launch;
pub mod linux;
pub mod matrix;
pub mod peer;
pub mod plot;
pub mod report;
pub mod sample;
pub mod soak;

use crate::error::Error;
use indicatif::{ProgressBar, ProgressStyle};
use launch::{Launcher, Vmm};
use report::{Row, VmmFigures};
use sample::Sample;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `perimeter bench` was asked for.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Also run every cell under QEMU.
    pub vs_qemu: bool,
    /// A small matrix (about a sixteenth of the data) and one run per cell.
    pub quick: bool,
    /// Runs per cell and VMM (default 3, 1 with `quick`).
    pub runs: Option<usize>,
    /// Only cells whose name contains one of these.
    pub only: Vec<String>,
    /// Where results.json and the plots go.
    pub out: PathBuf,
    /// The QEMU binary (default: `qemu-system-x86_64` on PATH).
    pub qemu: Option<PathBuf>,
    /// The guest image (default: the embedded guest).
    pub kernel: Option<PathBuf>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Longest a run may take.
    pub timeout: Duration,
    /// More guest command line for both VMMs (`poll_us=`, `vcon.rxbufs=`...).
    pub cmdline: String,
    /// vCPUs of each perimeter run.
    pub vcpus: u32,
    /// perimeter's `--tx-poll-us`, when given.
    pub tx_poll_us: Option<u64>,
    /// Pin each vCPU thread to a CPU of its own when there are CPUs enough.
    pub pin: bool,
}

/// How a bench ended, for the exit status.
pub struct BenchReport {
    /// The table as printed.
    pub table: String,
    /// Runs of perimeter that failed or lost data.
    pub perimeter_problems: Vec<String>,
}

/// Runs the matrix; prints progress on stderr; writes results.json and plots into `out`.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, Error> {
    let cells: Vec<matrix::Cell> = matrix::matrix(opts.quick)
        .into_iter()
        .filter(|c| {
            opts.only.is_empty() || opts.only.iter().any(|o| c.to_string().contains(o.as_str()))
        })
        .collect();
    if cells.is_empty() {
        return Err(Error::BadInput(format!(
            "no cell matches --only {:?}",
            opts.only
        )));
    }
    let launcher = prepare(opts)?;
    let vmms: Vec<Vmm> = if launcher.qemu.is_some() {
        vec![Vmm::Perimeter, Vmm::Qemu]
    } else {
        vec![Vmm::Perimeter]
    };
    let runs = opts.runs.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    let rows = measure(&launcher, &cells, &vmms, runs);
    let _ = std::fs::remove_dir_all(&launcher.sock_dir);
    write_outputs(opts, &launcher, &rows)?;
    let perimeter_problems = rows
        .iter()
        .flat_map(|r| {
            r.vmms
                .iter()
                .filter(|f| f.vmm == Vmm::Perimeter)
                .flat_map(move |f| f.problems.iter().map(move |p| format!("{}: {p}", r.name)))
        })
        .collect();
    Ok(BenchReport {
        table: report::table(&rows) + &pin_note(&launcher),
        perimeter_problems,
    })
}

/// Finds QEMU (with `--vs-qemu`), writes the guest image into `out`, makes the socket folder.
fn prepare(opts: &BenchOptions) -> Result<Launcher, Error> {
    let qemu = if opts.vs_qemu {
        Some(find_qemu(opts.qemu.as_deref())?)
    } else {
        None
    };
    std::fs::create_dir_all(&opts.out).map_err(host("cannot create the results folder"))?;
    let image = opts.out.join("guest.elf");
    let kernel = opts
        .kernel
        .clone()
        .map_or(crate::Kernel::Embedded, crate::Kernel::File);
    let (_, bytes) = crate::loader::image_bytes(&kernel)?;
    std::fs::write(&image, bytes).map_err(host("cannot write the guest image"))?;
    let sock_dir = std::env::temp_dir().join(format!("perimeter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir).map_err(host("cannot create the socket folder"))?;
    Ok(Launcher {
        perimeter: std::env::current_exe().map_err(host("cannot find this binary"))?,
        qemu,
        image,
        tsc_khz: host_tsc_khz()?,
        memory_mib: opts.memory_mib,
        sock_dir,
        timeout: opts.timeout,
        cmdline: opts.cmdline.clone(),
        vcpus: opts.vcpus,
        tx_poll_us: opts.tx_poll_us,
        pin: pinning(opts)?,
    })
}

/// The CPUs of the runs when they are pinned; this thread (and so every host peer and helper
/// thread it starts) is confined to the rest. None, with a note, when there are not CPUs
/// enough.
fn pinning(opts: &BenchOptions) -> Result<Option<launch::Pin>, Error> {
    if !opts.pin {
        return Ok(None);
    }
    let all = crate::affinity::allowed().map_err(host("cannot read the CPU affinity"))?;
    let split = match crate::affinity::Split::of(&all, opts.vcpus) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("perimeter: runs are not pinned ({e})");
            return Ok(None);
        }
    };
    crate::affinity::set_this_thread(&split.rest).map_err(host("cannot set the CPU affinity"))?;
    Ok(Some(launch::Pin { split, all }))
}

/// Runs every cell `runs` times under each VMM, interleaved, with a progress bar on stderr
/// (hidden when stderr is not a terminal).
fn measure(launcher: &Launcher, cells: &[matrix::Cell], vmms: &[Vmm], runs: usize) -> Vec<Row> {
    let bar = ProgressBar::new((cells.len() * runs * vmms.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for cell in cells {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); vmms.len()];
        for i in 0..runs {
            for (v, &vmm) in vmms.iter().enumerate() {
                bar.set_message(format!(
                    "{cell} under {} (run {}/{runs})",
                    vmm.name(),
                    i + 1
                ));
                let s = match launcher.run(vmm, cell) {
                    Ok(out) => Sample::from_run(cell, &out),
                    Err(e) => Sample {
                        problem: Some(e.to_string()),
                        ..Default::default()
                    },
                };
                samples[v].push(s);
                bar.inc(1);
            }
        }
        let figures = vmms
            .iter()
            .zip(samples)
            .map(|(&v, s)| VmmFigures::new(v, s))
            .collect();
        rows.push(Row::new(*cell, figures));
    }
    bar.finish_and_clear();
    rows
}

/// The version of `results.json`'s layout: 2 added the schema, commit and timestamp, the
/// pooled latency histograms, and percentiles and stages by name.
pub const RESULTS_SCHEMA: u32 = 2;

fn write_outputs(opts: &BenchOptions, launcher: &Launcher, rows: &[Row]) -> Result<(), Error> {
    let doc = serde_json::json!({
        "schema": RESULTS_SCHEMA,
        "commit": env!("PERIMETER_COMMIT"),
        "timestamp": jiff::Timestamp::now().to_string(),
        "machine": machine(launcher),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "quick": opts.quick,
        "memory_mib": opts.memory_mib,
        "guest_cmdline": opts.cmdline,
        "vcpus": opts.vcpus,
        "tx_poll_us": opts.tx_poll_us,
        "pinned": launcher.pin.as_ref().map(|p| serde_json::json!({
            "vcpus": p.split.vcpus,
            "rest": p.split.rest,
        })),
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&doc).expect("plain data serializes");
    std::fs::write(opts.out.join("results.json"), text + "\n")
        .map_err(host("cannot write results.json"))?;
    plot::throughput(rows, &opts.out.join("throughput.svg"))
        .and_then(|()| plot::latency(rows, &opts.out.join("latency.svg")))
        .and_then(|()| plot::advantage(rows, &opts.out.join("advantage.svg")).map(|_| ()))
        .map_err(|e| Error::Host {
            what: "cannot draw the plots",
            source: std::io::Error::other(e.to_string()),
        })
}

/// How the runs were placed on the host's CPUs (a line after the table).
fn pin_note(launcher: &Launcher) -> String {
    match &launcher.pin {
        Some(p) => format!(
            "pinned: perimeter's vCPU thread(s) alone on CPU {:?}, its other threads and the host \
             peers on CPU {:?}; QEMU unpinned (--no-pin: nothing pinned).\n",
            p.split.vcpus, p.split.rest
        ),
        None => "not pinned: the VMMs' threads and the host peers run on any CPU.\n".into(),
    }
}

/// The machine the figures come from.
fn machine(launcher: &Launcher) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu_version = launcher.qemu.as_ref().and_then(|q| {
        let out = std::process::Command::new(q)
            .arg("--version")
            .output()
            .ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .to_string(),
        )
    });
    serde_json::json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "host_kernel": kernel.trim(),
        "kvm": if Path::new("/sys/module/kvm_pvm").exists() { "kvm_pvm (guest ring 0 emulated)" } else { "kvm" },
        "tsc_khz": launcher.tsc_khz,
        "perimeter": env!("CARGO_PKG_VERSION"),
        "qemu": qemu_version,
    })
}

/// The vCPUs' TSC rate as KVM sets it (QEMU's guest cannot measure it without a debug page).
fn host_tsc_khz() -> Result<u32, Error> {
    let kvm = kvm_ioctls::Kvm::new().map_err(Error::KvmUnavailable)?;
    let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
    let vcpu = vm.create_vcpu(0).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    vcpu.get_tsc_khz().map_err(Error::kvm("KVM_GET_TSC_KHZ"))
}

/// `qemu-system-x86_64` (or `given`), or an error that says how to install it.
pub fn find_qemu(given: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(q) = given {
        return if q.is_file() {
            Ok(q.to_path_buf())
        } else {
            Err(Error::BadInput(format!(
                "--qemu {}: no such file",
                q.display()
            )))
        };
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        Error::BadInput(
            "--vs-qemu needs qemu-system-x86_64, which is not on PATH. On Debian or Ubuntu: \
             sudo apt-get install qemu-system-x86 (it brings the microvm firmware, \
             /usr/share/qemu/bios-microvm.bin); or point --qemu at a binary"
                .into(),
        )
    })
}

fn host(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Host { what, source }
}

/// Exit status of a bench: 0 when every perimeter run checked out.
pub fn status(report: &BenchReport) -> u8 {
    if report.perimeter_problems.is_empty() {
        0
    } else {
        1
    }
}
