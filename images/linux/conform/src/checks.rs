//! The checks, each printing one line.

use crate::system;
use guest_abi::seeded::Xorshift;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The pattern perimeter's `pattern` backend sends: byte `i` is `i % PATTERN_PERIOD`.
const PATTERN_PERIOD: u64 = guest_abi::console::PATTERN_PERIOD as u64;
/// Bytes per write() of a data check (Linux's driver takes up to 32 KiB per buffer).
const CHUNK: usize = 64 * 1024;
/// Round trips of the latency check, and their size.
const ROUND_TRIPS: usize = 200;
const ROUND_TRIP_BYTES: usize = 64;

/// Counts of checks that passed and failed.
#[derive(Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl Report {
    fn record(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                self.passed += 1;
                println!("conform: ok {what}: {detail}");
            }
            Err(why) => {
                self.failed += 1;
                println!("conform: FAIL {what}: {why}");
            }
        }
    }
}

/// One port as Linux shows it.
#[derive(Clone, Debug)]
struct Port {
    /// Port number within the device.
    id: u32,
    /// Its name (PORT_NAME).
    name: String,
    /// Its character device, `/dev/vportNpM`.
    dev: PathBuf,
}

/// What to check, from the kernel command line.
#[derive(Debug, Default)]
pub struct Plan {
    /// The names of the ports plugged in at boot, in port order.
    pub expected: Vec<String>,
    /// Bytes per data check.
    pub bytes: usize,
    /// How long to wait for anything the host does.
    pub timeout: Duration,
    /// A console tty whose size the host changes, and the size it sets.
    pub resize: Option<(String, u16, u16)>,
    /// A port the host removes and then adds back.
    pub remove: Option<String>,
    /// A port the host adds (unplugged at boot).
    pub add: Option<String>,
}

impl Plan {
    /// Reads `conform_resize=hvcN:COLSxROWS`, `conform_remove=NAME` and `conform_add=NAME`
    /// from `var` (the environment).
    pub fn hotplug_from(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = var("conform_resize") {
            let parsed = v.split_once(':').and_then(|(tty, size)| {
                let (c, r) = size.split_once('x')?;
                Some((tty.to_string(), c.parse().ok()?, r.parse().ok()?))
            });
            self.resize =
                Some(parsed.ok_or(format!("conform_resize={v}: expected hvcN:COLSxROWS"))?);
        }
        self.remove = var("conform_remove");
        self.add = var("conform_add");
        Ok(())
    }
}

/// Says what the guest waits for; the host's test acts on these lines.
fn waiting(what: &str) {
    println!("conform: waiting: {what}");
}

/// Runs every check.
pub fn run_all(report: &mut Report, plan: &Plan) {
    let (expected, bytes, timeout) = (&plan.expected, plan.bytes, plan.timeout);
    let ports = wait_for_ports(expected.len(), timeout);
    report.record("names", check_names(&ports, expected));
    report.record("hvc0", check_hvc0());
    for p in &ports {
        let what = format!("port {} ({})", p.id, p.name);
        let result = if p.name.starts_with("echo") {
            echo(p, bytes).and_then(|stream| match p.name.as_str() {
                "echo" => Ok(format!("{stream}; {}", round_trips(p)?)),
                _ => Ok(stream),
            })
        } else if p.name.starts_with("sink") {
            sink(p, bytes)
        } else if p.name.starts_with("source") {
            source(p, bytes)
        } else if is_console(p) {
            continue; // checked as hvc0
        } else {
            open_close(p)
        };
        report.record(&what, result);
    }
    if let Some((tty, cols, rows)) = &plan.resize {
        report.record(&format!("resize {tty}"), resize(tty, *cols, *rows, timeout));
    }
    if let Some(name) = &plan.remove {
        report.record(&format!("remove {name}"), remove(name, timeout));
        report.record(&format!("add {name} again"), add(name, timeout));
    }
    if let Some(name) = &plan.add {
        report.record(&format!("add {name}"), add(name, timeout));
    }
}

/// Polls `done` every 50 ms until it gives a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = done() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host resizes the pty behind console `tty`; the guest's tty must follow.
fn resize(tty: &str, cols: u16, rows: u16, timeout: Duration) -> Result<String, String> {
    let path = format!("/dev/{tty}");
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    let before = system::window_size(&f).map_err(|e| format!("TIOCGWINSZ: {e}"))?;
    waiting(&format!("resize {tty} to {cols}x{rows}"));
    let start = Instant::now();
    poll(timeout, || {
        system::window_size(&f).ok().filter(|s| *s == (cols, rows))
    })
    .ok_or_else(|| {
        format!(
            "{tty} stayed {:?}, not {cols}x{rows}",
            system::window_size(&f)
        )
    })?;
    Ok(format!(
        "{}x{} became {cols}x{rows} {:.0} ms after asking",
        before.0,
        before.1,
        start.elapsed().as_secs_f64() * 1e3
    ))
}

/// The host removes port `name` while the guest has it open: it leaves sysfs and the open
/// descriptor stops working.
fn remove(name: &str, timeout: Duration) -> Result<String, String> {
    let p = find(name).ok_or(format!("no port named {name} before the removal"))?;
    let mut file = open_rw(&p)?;
    waiting(&format!("remove {name}"));
    poll(timeout, || find(name).is_none().then_some(()))
        .ok_or(format!("{} is still there", p.dev.display()))?;
    match file.write(b"after removal") {
        Ok(n) => Err(format!("a write after the removal took {n} bytes")),
        Err(e) => Ok(format!(
            "gone from sysfs; a write on the open descriptor fails: {e}"
        )),
    }
}

/// The host adds port `name`: it appears, named, and carries data both ways.
fn add(name: &str, timeout: Duration) -> Result<String, String> {
    waiting(&format!("add {name}"));
    let p = poll(timeout, || find(name)).ok_or(format!("no port named {name} appeared"))?;
    let detail = if name.starts_with("echo") {
        echo(&p, 16 * 1024)?
    } else {
        open_close(&p)?
    };
    Ok(format!("port {} ({}): {detail}", p.id, p.dev.display()))
}

fn find(name: &str) -> Option<Port> {
    list_ports().into_iter().find(|p| p.name == name)
}

/// The ports under /sys/class/virtio-ports, once `count` of them are named (or at the timeout).
fn wait_for_ports(count: usize, timeout: Duration) -> Vec<Port> {
    let start = Instant::now();
    loop {
        let ports = list_ports();
        let named = ports.iter().filter(|p| !p.name.is_empty()).count();
        if named >= count || start.elapsed() > timeout {
            return ports;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn list_ports() -> Vec<Port> {
    let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") else {
        return Vec::new();
    };
    let mut ports: Vec<Port> = dir
        .flatten()
        .filter_map(|e| {
            let node = e.file_name().to_string_lossy().into_owned();
            let id = node.rsplit_once('p')?.1.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            Some(Port {
                id,
                name: name.trim().to_string(),
                dev: PathBuf::from("/dev").join(&node),
            })
        })
        .collect();
    ports.sort_by_key(|p| p.id);
    ports
}

fn check_names(ports: &[Port], expected: &[String]) -> Result<String, String> {
    let seen: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    if expected.is_empty() {
        return Err(format!(
            "no conform_ports= on the command line; Linux shows {seen:?}"
        ));
    }
    if seen != expected {
        return Err(format!("Linux shows {seen:?}, the host gave {expected:?}"));
    }
    Ok(seen.join(" "))
}

/// A console port: its vport cannot be opened (Linux serves it as hvc instead).
fn is_console(p: &Port) -> bool {
    matches!(File::open(&p.dev), Err(e) if e.raw_os_error() == Some(libc::ENXIO))
}

fn check_hvc0() -> Result<String, String> {
    let mut hvc = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/hvc0")
        .map_err(|e| format!("/dev/hvc0: {e}"))?;
    hvc.write_all(b"conform: hello from hvc0\n")
        .map_err(|e| format!("writing to hvc0: {e}"))?;
    let (cols, rows) = system::window_size(&hvc).map_err(|e| format!("TIOCGWINSZ: {e}"))?;
    Ok(format!("wrote a line; window {cols}x{rows}"))
}

fn open_rw(p: &Port) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p.dev)
        .map_err(|e| format!("{}: {e}", p.dev.display()))
}

fn open_close(p: &Port) -> Result<String, String> {
    drop(open_rw(p)?);
    Ok("opened and closed".into())
}

/// Deterministic bytes (xorshift) for the data checks.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    Xorshift::from_state(seed.wrapping_mul(2).wrapping_add(1)).fill(&mut v);
    v
}

fn rate(bytes: usize, t: Duration) -> String {
    format!(
        "{:.2} MiB/s",
        bytes as f64 / (1 << 20) as f64 / t.as_secs_f64().max(1e-9)
    )
}

/// Writes `bytes` and reads them back through the host's echo; compares checksums.
fn echo(p: &Port, bytes: usize) -> Result<String, String> {
    let file = open_rw(p)?;
    let mut writer = file.try_clone().map_err(|e| e.to_string())?;
    let sent = data(bytes, u64::from(p.id) + 1);
    let sent_crc = crc32fast::hash(&sent);
    let start = Instant::now();
    let thread = std::thread::spawn(move || -> io::Result<()> {
        for chunk in sent.chunks(CHUNK) {
            writer.write_all(chunk)?;
        }
        Ok(())
    });
    let mut back = vec![0u8; bytes];
    let read = read_exact(&file, &mut back);
    let wrote = thread
        .join()
        .map_err(|_| "the writer thread panicked".to_string())?;
    wrote.map_err(|e| format!("write: {e}"))?;
    read.map_err(|e| format!("read: {e}"))?;
    let elapsed = start.elapsed();
    let back_crc = crc32fast::hash(&back);
    if back_crc != sent_crc {
        let at = back
            .iter()
            .zip(data(bytes, u64::from(p.id) + 1))
            .position(|(a, b)| *a != b);
        return Err(format!(
            "echoed crc32 {back_crc:#010x}, sent {sent_crc:#010x}; first difference at byte {at:?}"
        ));
    }
    Ok(format!(
        "{bytes} bytes both ways, crc32 {sent_crc:#010x}, {}",
        rate(2 * bytes, elapsed)
    ))
}

/// Round trips of 64 bytes through the host's echo: median and 99th percentile.
fn round_trips(p: &Port) -> Result<String, String> {
    let mut file = open_rw(p)?;
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let sent = data(ROUND_TRIP_BYTES, 1000 + i as u64);
        let mut back = vec![0u8; ROUND_TRIP_BYTES];
        let start = Instant::now();
        file.write_all(&sent)
            .map_err(|e| format!("round trip {i}: write: {e}"))?;
        read_exact(&file, &mut back).map_err(|e| format!("round trip {i}: read: {e}"))?;
        times.push(start.elapsed());
        if back != sent {
            return Err(format!("round trip {i}: the echo differs"));
        }
    }
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(format!(
        "{ROUND_TRIPS} round trips of {ROUND_TRIP_BYTES} bytes, median {:.0} us, p99 {:.0} us",
        us(times[ROUND_TRIPS / 2]),
        us(times[ROUND_TRIPS * 99 / 100])
    ))
}

/// Writes `bytes` to the host's null backend; the host checks the count and checksum.
fn sink(p: &Port, bytes: usize) -> Result<String, String> {
    let mut file = open_rw(p)?;
    let sent = data(bytes, u64::from(p.id) + 1);
    let start = Instant::now();
    for chunk in sent.chunks(CHUNK) {
        file.write_all(chunk).map_err(|e| format!("write: {e}"))?;
    }
    let elapsed = start.elapsed();
    Ok(format!(
        "wrote {bytes} bytes, crc32 {:#010x}, {}",
        crc32fast::hash(&sent),
        rate(bytes, elapsed)
    ))
}

/// Reads `bytes` of the host's pattern and checks every byte.
fn source(p: &Port, bytes: usize) -> Result<String, String> {
    let file = open_rw(p)?;
    let mut got = vec![0u8; bytes];
    let start = Instant::now();
    read_exact(&file, &mut got).map_err(|e| format!("read: {e}"))?;
    let elapsed = start.elapsed();
    if let Some(at) = (0..bytes).find(|&i| u64::from(got[i]) != i as u64 % PATTERN_PERIOD) {
        return Err(format!(
            "byte {at} is {}, the pattern says {}",
            got[at],
            at as u64 % PATTERN_PERIOD
        ));
    }
    Ok(format!(
        "read {bytes} bytes of the pattern, {}",
        rate(bytes, elapsed)
    ))
}

fn read_exact(mut file: &File, buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match file.read(&mut buf[at..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of stream after {at} bytes"),
                ));
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_and_differs_per_seed() {
        assert_eq!(data(100, 1), data(100, 1));
        assert_ne!(data(100, 1), data(100, 2));
    }

    #[test]
    fn hotplug_words_parse_and_bad_sizes_say_why() {
        let vars = |k: &str| match k {
            "conform_resize" => Some("hvc1:123x45".to_string()),
            "conform_add" => Some("late".to_string()),
            _ => None,
        };
        let mut plan = Plan::default();
        plan.hotplug_from(vars).unwrap();
        assert_eq!(plan.resize, Some(("hvc1".into(), 123, 45)));
        assert_eq!(
            (plan.add.as_deref(), plan.remove.as_deref()),
            (Some("late"), None)
        );
        let bad = |k: &str| (k == "conform_resize").then(|| "hvc1:12".to_string());
        assert!(
            Plan::default()
                .hotplug_from(bad)
                .unwrap_err()
                .contains("hvcN:COLSxROWS")
        );
    }

    #[test]
    fn names_must_match_in_port_order() {
        let port = |id, name: &str| Port {
            id,
            name: name.into(),
            dev: PathBuf::new(),
        };
        let ports = [port(0, "console"), port(1, "echo")];
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_names(&ports, &want(&["console", "echo"])).is_ok());
        assert!(check_names(&ports, &want(&["echo", "console"])).is_err());
        assert!(check_names(&ports, &want(&["console"])).is_err());
        assert!(check_names(&ports, &[]).is_err());
    }
}
