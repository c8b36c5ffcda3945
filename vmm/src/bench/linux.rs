//! `perimeter bench --linux`: the Linux test guest's conformance program as a benchmark, under
//! perimeter and (with `--vs-qemu`) QEMU's microvm, booting the same vmlinux and initramfs
//! with the same host peers on UNIX sockets ([`super::peer`]), runs interleaved.
//!
//! The figures are the guest's own (`conform` measures with its clock): guest to host (64 KiB
//! writes to `sink`), host to guest (reads from `source`), both ways through `echo`, 64-byte
//! round trips through `echo`; and the kernel's time to `Run /init`. A run counts only when
//! every conformance check passed and the sink's peer received every byte.

use super::launch::{QEMU_COMMON, Vmm};
use super::peer::{Peer, Role};
use super::report::median;
use crate::error::Error;
use crate::linux::cpuid::{PVM_CMDLINE, pvm_host};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What `perimeter bench --linux` was asked for.
#[derive(Clone, Debug)]
pub struct LinuxBenchOptions {
    /// This binary.
    pub perimeter: PathBuf,
    /// `qemu-system-x86_64`, to compare with.
    pub qemu: Option<PathBuf>,
    /// The vmlinux (or bzImage) both VMMs boot.
    pub kernel: PathBuf,
    /// The initramfs with `/conform`.
    pub initrd: PathBuf,
    /// Runs per VMM.
    pub runs: usize,
    /// Bytes per data check.
    pub bytes: u64,
    /// Guest RAM.
    pub memory_mib: u64,
    /// A run taking longer is killed.
    pub timeout: Duration,
}

/// One run's figures, as the guest measured them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinuxFigures {
    /// Kernel time stamp of `Run /init`, seconds.
    pub init_s: Option<f64>,
    /// Process start to the guest's summary line, seconds.
    pub wall_s: f64,
    /// Guest to host, MiB/s.
    pub tx_mibs: Option<f64>,
    /// Host to guest, MiB/s.
    pub rx_mibs: Option<f64>,
    /// Both ways through echo, MiB/s.
    pub echo_mibs: Option<f64>,
    /// 64-byte round trips: median and 99th percentile, microseconds.
    pub rtt_median_us: Option<f64>,
    /// See `rtt_median_us`.
    pub rtt_p99_us: Option<f64>,
}

/// How long a VMM may take to exit after the guest's summary line.
const AFTER_SUMMARY: Duration = Duration::from_secs(10);

const PORTS: [(&str, Option<Role>); 4] = [
    ("console", None),
    ("echo", Some(Role::Echo)),
    ("sink", Some(Role::Sink)),
    ("source", Some(Role::Source)),
];

/// Runs the benchmark and returns the table.
pub fn run(opts: &LinuxBenchOptions) -> Result<String, Error> {
    let dir = std::env::temp_dir().join(format!("perimeter-bench-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::host("cannot create the socket folder"))?;
    let mut vmms = vec![Vmm::Perimeter];
    if opts.qemu.is_some() {
        vmms.push(Vmm::Qemu);
    }
    let mut figures: Vec<Vec<LinuxFigures>> = vec![Vec::new(); vmms.len()];
    let mut problems = Vec::new();
    for i in 0..opts.runs {
        for (v, &vmm) in vmms.iter().enumerate() {
            eprintln!(
                "perimeter bench: Linux guest under {} (run {}/{})",
                vmm.name(),
                i + 1,
                opts.runs
            );
            match run_once(opts, vmm, &dir) {
                Ok(f) => figures[v].push(f),
                Err(e) => problems.push(format!("{} run {}: {e}", vmm.name(), i + 1)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for p in &problems {
        eprintln!("perimeter bench: {p}");
    }
    if figures[0].is_empty() {
        return Err(Error::BadInput(format!(
            "no perimeter run of the Linux guest succeeded: {}",
            problems.join("; ")
        )));
    }
    Ok(table(&vmms, &figures))
}

fn run_once(opts: &LinuxBenchOptions, vmm: Vmm, dir: &Path) -> Result<LinuxFigures, String> {
    let socks: Vec<PathBuf> = PORTS
        .iter()
        .map(|(name, _)| dir.join(format!("{name}.sock")))
        .collect();
    let mut peers = Vec::new();
    for ((_, role), sock) in PORTS.iter().zip(&socks) {
        if let Some(role) = role {
            peers.push(Peer::listen(sock, *role).map_err(|e| e.to_string())?);
        }
    }
    let guest_words = format!(
        "rdinit=/conform conform_ports=console,echo,sink,source conform_bytes={}",
        opts.bytes
    );
    let mut cmd = match vmm {
        Vmm::Perimeter => perimeter_command(opts, &socks, &guest_words),
        Vmm::Qemu => qemu_command(opts, &socks, &guest_words)?,
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let (done_tx, done_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("conform: ") && line.contains(" passed, ") {
                let _ = done_tx.send(t0.elapsed());
            }
            text += &line;
            text.push('\n');
        }
        text
    });
    // The run's time is process start to the guest's summary line. QEMU's microvm cannot
    // reset the guest (no keyboard controller, and the triple fault's path stops in the
    // emulator here), so a VMM still running shortly after that line is stopped.
    let mut finished = None;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        finished = finished.or_else(|| done_rx.try_recv().ok());
        let limit = finished.map_or(opts.timeout, |t| t + AFTER_SUMMARY);
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    let reports: Vec<_> = peers.into_iter().map(Peer::finish).collect();
    let finished = finished.or_else(|| done_rx.try_recv().ok());
    if !stdout.contains("conform: 5 passed, 0 failed") {
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines[lines.len().saturating_sub(3)..].join(" / ");
        return Err(match status {
            None => format!(
                "killed after {} s; last lines: {last}",
                opts.timeout.as_secs()
            ),
            Some(s) => format!("the conformance checks did not pass ({s}); last lines: {last}"),
        });
    }
    let wall_s = finished.unwrap_or(t0.elapsed()).as_secs_f64();
    // Peers in PORTS order without the console: echo, sink, source.
    if reports[1].bytes_in != opts.bytes {
        return Err(format!(
            "the sink's peer received {} bytes of {}",
            reports[1].bytes_in, opts.bytes
        ));
    }
    let mut f = parse(&stdout);
    f.wall_s = wall_s;
    Ok(f)
}

fn perimeter_command(opts: &LinuxBenchOptions, socks: &[PathBuf], words: &str) -> Command {
    let mut cmd = Command::new(&opts.perimeter);
    cmd.args(["run", "--kernel"])
        .arg(&opts.kernel)
        .arg("--initrd")
        .arg(&opts.initrd)
        .args(["--memory", &opts.memory_mib.to_string()])
        .args(["--cmdline", words])
        .args(["--timeout", &opts.timeout.as_secs().to_string()])
        .args(["--port", "name=console,backend=null,console"]);
    for ((name, _), sock) in PORTS.iter().zip(socks).skip(1) {
        cmd.arg("--port")
            .arg(format!("name={name},backend=connect:{}", sock.display()));
    }
    cmd
}

fn qemu_command(
    opts: &LinuxBenchOptions,
    socks: &[PathBuf],
    words: &str,
) -> Result<Command, String> {
    let qemu = opts.qemu.as_ref().ok_or("QEMU is not set up")?;
    let (cpu, extra) = if pvm_host() {
        ("qemu64,vendor=GenuineIntel,-cx16", PVM_CMDLINE)
    } else {
        ("host", "")
    };
    let mut cmd = Command::new(qemu);
    // Linux needs the legacy timer and interrupt controllers (it calibrates against the PIT).
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on,acpi=off",
        "-cpu",
        cpu,
    ])
    .args(QEMU_COMMON)
    .args(["-m", &format!("{}M", opts.memory_mib)])
    .arg("-kernel")
    .arg(&opts.kernel)
    .arg("-initrd")
    .arg(&opts.initrd)
    .arg("-append")
    // perimeter's own words: the guests differ only in what the VMM adds (the device).
    .arg(format!("console=ttyS0 reboot=k panic=-1 {extra} {words}"))
    .args(["-device", "virtio-serial-device,max_ports=4"])
    .args([
        "-chardev",
        "null,id=c0",
        "-device",
        "virtconsole,chardev=c0,name=console",
    ]);
    for (i, ((name, _), sock)) in PORTS.iter().zip(socks).enumerate().skip(1) {
        let path = sock
            .to_str()
            .filter(|s| !s.contains(','))
            .ok_or("a socket path QEMU cannot take")?;
        cmd.arg("-chardev")
            .arg(format!("socket,id=c{i},path={path}"))
            .arg("-device")
            .arg(format!("virtserialport,chardev=c{i},name={name}"));
    }
    Ok(cmd)
}

/// The number before `unit` in `line` (`"..., 0.33 MiB/s"`).
fn number_before(line: &str, unit: &str) -> Option<f64> {
    let at = line.find(unit)?;
    line[..at]
        .trim_end()
        .rsplit([' ', ','])
        .next()?
        .parse()
        .ok()
}

/// The guest's figures from its console output.
pub fn parse(stdout: &str) -> LinuxFigures {
    let line = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix));
    let init_s = line_containing(stdout, " as init process").and_then(|l| {
        let stamp = l.strip_prefix('[')?.split(']').next()?;
        stamp.trim().parse().ok()
    });
    let echo = line("conform: ok port 1 (echo)");
    LinuxFigures {
        init_s,
        wall_s: 0.0,
        tx_mibs: line("conform: ok port 2 (sink)").and_then(|l| number_before(l, "MiB/s")),
        rx_mibs: line("conform: ok port 3 (source)").and_then(|l| number_before(l, "MiB/s")),
        echo_mibs: echo.and_then(|l| number_before(l, "MiB/s")),
        rtt_median_us: echo.and_then(|l| number_before(l.split("median").nth(1)?, "us")),
        rtt_p99_us: echo.and_then(|l| number_before(l.split("p99").nth(1)?, "us")),
    }
}

fn line_containing<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

/// Medians per VMM, one row per figure, with perimeter's advantage over QEMU.
fn table(vmms: &[Vmm], figures: &[Vec<LinuxFigures>]) -> String {
    type Get = fn(&LinuxFigures) -> Option<f64>;
    let rows: [(&str, Get, bool); 7] = [
        ("init runs (kernel clock), s", |f| f.init_s, false),
        (
            "start to the last check (wall), s",
            |f| Some(f.wall_s),
            false,
        ),
        ("guest->host 64 KiB writes, MiB/s", |f| f.tx_mibs, true),
        ("host->guest, MiB/s", |f| f.rx_mibs, true),
        ("echo both ways, MiB/s", |f| f.echo_mibs, true),
        ("round trip 64 B, median us", |f| f.rtt_median_us, false),
        ("round trip 64 B, p99 us", |f| f.rtt_p99_us, false),
    ];
    let mut s = format!("{:<36}", "Linux guest (medians)");
    for v in vmms {
        s += &format!(" {:>12}", v.name());
    }
    if vmms.len() > 1 {
        s += &format!(" {:>10}", "advantage");
    }
    s += &format!(
        "  runs: {}\n",
        figures
            .iter()
            .map(|f| f.len().to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
    for (name, get, higher_is_better) in rows {
        s += &format!("{name:<36}");
        let meds: Vec<Option<f64>> = figures
            .iter()
            .map(|runs| median(runs.iter().filter_map(get).collect()))
            .collect();
        for m in &meds {
            s += &match m {
                Some(m) => format!(" {m:>12.2}"),
                None => format!(" {:>12}", "-"),
            };
        }
        if let [Some(p), Some(q)] = meds[..] {
            let adv = if higher_is_better { p / q } else { q / p };
            s += &format!(" {adv:>9.2}x");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "[  140.223467] Run /init as init process
conform: ok port 1 (echo): 262144 bytes both ways, crc32 0x78f3c3b1, 0.10 MiB/s; 200 round trips of 64 bytes, median 19195 us, p99 47391 us
conform: ok port 2 (sink): wrote 262144 bytes, crc32 0x4f5835ca, 0.38 MiB/s
conform: ok port 3 (source): read 262144 bytes of the pattern, 0.21 MiB/s
";

    #[test]
    fn figures_come_from_the_guest_lines() {
        let f = parse(OUT);
        assert_eq!(f.init_s, Some(140.223467));
        assert_eq!(
            (f.tx_mibs, f.rx_mibs, f.echo_mibs),
            (Some(0.38), Some(0.21), Some(0.10))
        );
        assert_eq!(
            (f.rtt_median_us, f.rtt_p99_us),
            (Some(19195.0), Some(47391.0))
        );
        assert_eq!(parse("nothing"), LinuxFigures::default());
    }

    #[test]
    fn the_table_shows_medians_and_the_advantage() {
        let f = |tx| LinuxFigures {
            tx_mibs: Some(tx),
            rtt_median_us: Some(tx * 100.0),
            ..Default::default()
        };
        let t = table(
            &[Vmm::Perimeter, Vmm::Qemu],
            &[vec![f(2.0), f(4.0), f(3.0)], vec![f(1.0)]],
        );
        let tx = t.lines().find(|l| l.starts_with("guest->host")).unwrap();
        assert!(tx.contains("3.00") && tx.ends_with("3.00x"), "{t}");
        let rtt = t
            .lines()
            .find(|l| l.starts_with("round trip 64 B, median"))
            .unwrap();
        assert!(rtt.ends_with("0.33x"), "{t}");
    }
}
