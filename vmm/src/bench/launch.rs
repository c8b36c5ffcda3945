//! Starting one benchmark run under either VMM, with the same guest image, guest command line,
//! ports and host peers, and collecting what came out: the guest's `@result` lines, the exit
//! code, the time to the first byte of output and to exit, and what each peer saw.

use super::matrix::Cell;
use super::peer::{Peer, PeerReport};
use crate::affinity::{self, Split};
use crate::results::GuestResult;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which VMM runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    /// This binary, `perimeter run`.
    Perimeter,
    /// `qemu-system-x86_64 -M microvm` with `virtio-serial-device`.
    Qemu,
}

impl Vmm {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Perimeter => "perimeter",
            Vmm::Qemu => "qemu",
        }
    }
}

/// How to start the VMMs.
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The perimeter binary.
    pub perimeter: PathBuf,
    /// `qemu-system-x86_64`, when comparing.
    pub qemu: Option<PathBuf>,
    /// The guest image as a file (QEMU boots it through its PVH note).
    pub image: PathBuf,
    /// The vCPUs' TSC rate (QEMU's guest learns it from the command line).
    pub tsc_khz: u32,
    /// Guest RAM.
    pub memory_mib: u64,
    /// Where the port sockets live.
    pub sock_dir: PathBuf,
    /// A run taking longer is killed and reported.
    pub timeout: Duration,
    /// More guest command line (tuning knobs), the same for both VMMs.
    pub cmdline: String,
    /// vCPUs of a perimeter run.
    pub vcpus: u32,
    /// perimeter's `--tx-poll-us`, when given.
    pub tx_poll_us: Option<u64>,
    /// The CPUs of pinned runs (the bench's own threads are on the rest already): perimeter
    /// runs with `--pin-vcpus`; QEMU and perimeter both start with every CPU.
    pub pin: Option<Pin>,
}

/// How the runs are pinned.
#[derive(Clone, Debug)]
pub struct Pin {
    /// The vCPUs' CPUs and the rest.
    pub split: Split,
    /// Every CPU the bench may use: perimeter starts with them and splits them itself.
    pub all: Vec<usize>,
}

/// What one run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// The guest's exit code, when it exited by itself.
    pub guest_exit: Option<i32>,
    /// The process's exit status (for messages).
    pub status: String,
    /// The run was killed after [`Launcher::timeout`].
    pub timed_out: bool,
    /// Process start to the first byte of the guest's output (perimeter's stderr under
    /// `--json`, QEMU's stdout).
    pub first_byte: Option<Duration>,
    /// Process start to its exit.
    pub wall: Duration,
    /// The last lines of standard error and of the guest's output other than results, for
    /// failure messages.
    pub last_words: String,
    /// The guest's results.
    pub results: Vec<GuestResult>,
    /// Each port's peer, port 0 first.
    pub peers: Vec<PeerReport>,
}

impl Launcher {
    /// Runs `cell` once under `vmm`.
    pub fn run(&self, vmm: Vmm, cell: &Cell) -> io::Result<RunOutput> {
        let socks: Vec<PathBuf> = (0..=cell.ports)
            .map(|i| self.sock_dir.join(format!("port{i}.sock")))
            .collect();
        let peers = cell
            .roles()
            .into_iter()
            .zip(&socks)
            .map(|(role, path)| Peer::listen(path, role))
            .collect::<io::Result<Vec<Peer>>>()?;
        let mut cmd = match vmm {
            Vmm::Perimeter => self.perimeter_command(cell, &socks),
            Vmm::Qemu => self.qemu_command(cell, &socks)?,
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(pin) = &self.pin {
            // Not the bench's CPUs: every CPU, for perimeter to split and for QEMU to use.
            let all = pin.all.clone();
            // SAFETY: between fork and exec the closure makes one system call
            // (sched_setaffinity) on a cpu_set_t built on the stack; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || affinity::set_this_thread(&all));
            }
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {:?}: {e}", cmd.get_program()),
            )
        })?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let reader = std::thread::spawn(move || read_timed(out, t0));
        let err_reader = std::thread::spawn(move || read_timed(err, t0));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((child.wait(), Instant::now()));
        });
        let (waited, timed_out) = match rx.recv_timeout(self.timeout) {
            Ok(w) => (w, false),
            Err(_) => {
                // SAFETY: kill(2) on our own child, which has not been reaped (its waiter
                // thread is still blocked in wait), so the pid cannot have been reused.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                (rx.recv().map_err(io::Error::other)?, true)
            }
        };
        let (status, ended) = waited;
        let status = status?;
        let wall = ended - t0;
        let (stdout, first_out) = reader.join().unwrap_or_default();
        let (stderr, first_err) = err_reader.join().unwrap_or_default();
        let peers = peers.into_iter().map(Peer::finish).collect();
        let stdout = String::from_utf8_lossy(&stdout);
        let stderr = String::from_utf8_lossy(&stderr);
        // perimeter --json writes the guest's lines to stderr (stdout holds the document);
        // QEMU writes them to stdout.
        let first_byte = match vmm {
            Vmm::Perimeter => first_err,
            Vmm::Qemu => first_out,
        };
        let last_words: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty() && !l.starts_with('{') && !l.starts_with("@result"))
            .collect();
        let last_words = last_words[last_words.len().saturating_sub(3)..].join(" / ");
        let guest_exit = status.code().and_then(|c| match vmm {
            Vmm::Perimeter => (c <= 119).then_some(c),
            // isa-debug-exit: status = code * 2 + 1.
            Vmm::Qemu => (c % 2 == 1).then_some(c / 2),
        });
        Ok(RunOutput {
            guest_exit: if timed_out { None } else { guest_exit },
            status: status.to_string(),
            timed_out,
            first_byte,
            wall,
            last_words,
            results: match vmm {
                Vmm::Perimeter => perimeter_results(&stdout),
                Vmm::Qemu => raw_results(&stdout),
            },
            peers,
        })
    }

    fn perimeter_command(&self, cell: &Cell, socks: &[PathBuf]) -> Command {
        let mut cmd = Command::new(&self.perimeter);
        cmd.args(["run", "--json", "--memory", &self.memory_mib.to_string()])
            .args(["--timeout", &self.timeout.as_secs().to_string()])
            .args(["--workload", &cell.workload()])
            .args(["--cmdline", &self.cmdline])
            .args(["--vcpus", &self.vcpus.to_string()]);
        if self.pin.is_some() {
            cmd.arg("--pin-vcpus");
        }
        if let Some(us) = self.tx_poll_us {
            cmd.args(["--tx-poll-us", &us.to_string()]);
        }
        for (i, sock) in socks.iter().enumerate() {
            let name = port_name(i);
            let console = if i == 0 { ",console" } else { "" };
            cmd.arg("--port").arg(format!(
                "name={name},backend=connect:{}{console}",
                sock.display()
            ));
        }
        cmd
    }

    fn qemu_command(&self, cell: &Cell, socks: &[PathBuf]) -> io::Result<Command> {
        let qemu = self
            .qemu
            .as_ref()
            .ok_or_else(|| io::Error::other("QEMU is not set up"))?;
        let mut cmd = Command::new(qemu);
        cmd.args(QEMU_MACHINE)
            .args(QEMU_COMMON)
            .args(["-m", &format!("{}M", self.memory_mib)])
            .arg("-kernel")
            .arg(&self.image)
            .arg("-append")
            .arg(format!(
                "tsc_khz={} workload={} {}",
                self.tsc_khz,
                cell.workload(),
                self.cmdline
            ))
            .args([
                "-device",
                // MULTIPORT is offered only with more than one port.
                &format!("virtio-serial-device,max_ports={}", socks.len().max(2)),
            ]);
        for (i, sock) in socks.iter().enumerate() {
            let kind = if i == 0 {
                "virtconsole"
            } else {
                "virtserialport"
            };
            cmd.arg("-chardev")
                .arg(format!("socket,id=c{i},path={}", path_arg(sock)?))
                .arg("-device")
                .arg(format!("{kind},chardev=c{i},name={}", port_name(i)));
        }
        Ok(cmd)
    }
}

/// What every QEMU run of the bench shares: KVM, one vCPU, no display or default devices,
/// COM1 on stdout, exit instead of reboot, modern virtio-mmio.
pub const QEMU_COMMON: &[&str] = &[
    "-enable-kvm",
    "-smp",
    "1",
    "-display",
    "none",
    "-nodefaults",
    "-no-reboot",
    "-serial",
    "stdio",
    "-global",
    "virtio-mmio.force-legacy=false",
];

/// QEMU's machine for the project's guest: microvm without ACPI (so `virtio_mmio.device=`
/// reaches the command line), PVH boot through qboot, `isa-debug-exit` for the exit code.
/// `-arch-capabilities`: PVM hosts refuse that MSR (harmless elsewhere).
pub const QEMU_MACHINE: &[&str] = &[
    "-M",
    "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off,acpi=off",
    "-cpu",
    "host,-arch-capabilities",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=4",
];

/// Port `i`'s name: `console`, then `port1`, `port2`...
pub fn port_name(i: usize) -> String {
    if i == 0 {
        "console".into()
    } else {
        format!("port{i}")
    }
}

/// A path QEMU's option parser takes as it is (no commas: they separate options).
fn path_arg(p: &Path) -> io::Result<String> {
    let s = p.to_str().unwrap_or_default();
    if s.is_empty() || s.contains(',') {
        return Err(io::Error::other(format!(
            "{}: QEMU cannot take this path",
            p.display()
        )));
    }
    Ok(s.to_string())
}

/// Everything `from` gives until its end, and when its first byte came (since `t0`).
fn read_timed(mut from: Option<impl Read>, t0: Instant) -> (Vec<u8>, Option<Duration>) {
    let (mut buf, mut first) = (Vec::new(), None);
    let mut chunk = [0u8; 4096];
    while let Some(Ok(n @ 1..)) = from.as_mut().map(|o| o.read(&mut chunk)) {
        first.get_or_insert_with(|| t0.elapsed());
        buf.extend_from_slice(&chunk[..n]);
    }
    (buf, first)
}

/// The `results` of `perimeter run --json`'s document (its last line starting with `{`).
pub fn perimeter_results(stdout: &str) -> Vec<GuestResult> {
    let Some(doc) = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        return Vec::new();
    };
    let fields = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
            .collect()
    };
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| GuestResult {
            fields: fields(r),
            host_check: r["host_check"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The `@result` lines of a guest's raw output (QEMU's serial port).
pub fn raw_results(stdout: &str) -> Vec<GuestResult> {
    let prefix = std::str::from_utf8(crate::results::PREFIX).unwrap_or("@result ");
    stdout
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
        .map(GuestResult::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_results_skip_other_output() {
        let r = raw_results("perimeter guest: hi\r\n@result workload=tx bytes=5\r\nbye\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].get("bytes"), Some("5"));
    }

    #[test]
    fn perimeter_results_come_from_the_json_document() {
        let out = "guest says hi\n{\"ports\":[],\"results\":[{\"fields\":[[\"workload\",\"rx\"],\
                   [\"check\",\"ok\"]],\"host_check\":\"\"}]}\n";
        let r = perimeter_results(out);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].get("workload"), Some("rx"));
        assert_eq!(r[0].get("check"), Some("ok"));
        assert!(perimeter_results("no json here").is_empty());
    }

    #[test]
    fn qemu_paths_with_commas_are_refused() {
        assert!(path_arg(Path::new("/tmp/a,b")).is_err());
        assert_eq!(path_arg(Path::new("/tmp/ab")).unwrap(), "/tmp/ab");
    }
}
