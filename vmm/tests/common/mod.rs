//! Helpers shared by the KVM tests: running `perimeter`, skipping loudly without `/dev/kvm`,
//! scratch directories and test data.
#![allow(dead_code)] // each test binary uses a different subset

pub mod tmux;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether `/dev/kvm` exists; if not, says on stderr (not captured) that `test` is skipped.
pub fn kvm_present(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: /dev/kvm is missing, so no guest can boot here ***\n"
    );
    false
}

/// Runs the `perimeter` binary with `args` (stdin closed) and collects its output.
pub fn perimeter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(args)
        .output()
        .expect("perimeter runs")
}

/// Starts `perimeter` with `args`: stdin closed, stdout and stderr piped.
pub fn spawn_piped(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("perimeter starts")
}

/// Bytes as text, lossily.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit status of a run that ended normally (not by a signal).
pub fn status(o: &Output) -> i32 {
    o.status
        .code()
        .expect("perimeter exits normally, not by a signal")
}

/// A fresh scratch directory for `test`.
pub fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perimeter-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` bytes that are not periodic in any small period (so a lost or repeated buffer shows);
/// different seeds give different streams.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    guest_abi::seeded::Xorshift::new(seed).fill(&mut v);
    v
}

/// The JSON document of a `--json` run, which is all its stdout holds (one line; the
/// guest's own lines went to stderr).
pub fn json(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        panic!(
            "stdout is not one line of JSON: {stdout}\nstderr: {}",
            text(&out.stderr)
        );
    };
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The statistics of port `name` in a `--json` document.
pub fn port_stats<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}: {doc}"))
}

/// perimeter's stderr (piped), read line by line while it runs.
pub struct StderrLines {
    lines: std::io::BufReader<std::process::ChildStderr>,
    /// Everything read so far.
    pub seen: String,
}

impl StderrLines {
    /// Takes `child`'s stderr.
    pub fn of(child: &mut std::process::Child) -> Self {
        StderrLines {
            lines: std::io::BufReader::new(child.stderr.take().expect("stderr piped")),
            seen: String::new(),
        }
    }

    /// Reads until a line starting with one of `prefixes` came for each; panics if stderr
    /// ends first.
    pub fn wait_for(&mut self, prefixes: &[&str]) {
        use std::io::BufRead;
        let mut missing = prefixes.to_vec();
        while !missing.is_empty() {
            let mut line = String::new();
            if self.lines.read_line(&mut line).unwrap() == 0 {
                panic!("perimeter ended before writing {missing:?}: {}", self.seen);
            }
            missing.retain(|p| !line.starts_with(p));
            self.seen += &line;
        }
    }

    /// The rest of stderr, read on a thread; it yields everything written there, at the end.
    pub fn rest(mut self) -> std::thread::JoinHandle<String> {
        use std::io::Read;
        std::thread::spawn(move || {
            let _ = self.lines.read_to_string(&mut self.seen);
            self.seen
        })
    }
}

/// Waits until perimeter (`child`, its stderr piped) has written a stderr line starting with
/// each of `prefixes`; the thread returned yields everything it wrote there, at its end.
pub fn wait_for_line(
    child: &mut std::process::Child,
    prefixes: &[String],
) -> std::thread::JoinHandle<String> {
    let mut err = StderrLines::of(child);
    err.wait_for(&prefixes.iter().map(String::as_str).collect::<Vec<_>>());
    err.rest()
}
