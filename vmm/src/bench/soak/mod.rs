//! `perimeter bench --soak MINUTES`: one VM for MINUTES with every port busy both ways. The
//! guest echoes every port (`--workload echo`); a host peer per port ([`traffic`]) sends a
//! seeded stream in random chunks and compares every byte of the echo, both sides pausing
//! at random; allocation failures are injected on both sides (`--fault`, `--guest-fault`).
//! perimeter's resident memory is sampled throughout. At the end the ports are hot-removed
//! through the control socket, which ends the guest's echo, and the guest's own counts, the
//! console statistics and the peers' are compared.

pub mod memory;
pub mod traffic;

use crate::error::Error;
use memory::{Rss, rss_bytes};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use traffic::{Outcome, Traffic};

/// What a soak is asked for.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long the ports carry traffic.
    pub duration: Duration,
    /// Ports, all echoing in the guest.
    pub ports: usize,
    /// Probability of an injected allocation failure, host and guest side alike.
    pub fault_rate: f64,
    /// Seeds the streams, the chunk sizes, the pauses and the faults.
    pub seed: u64,
    /// The perimeter binary to run.
    pub perimeter: PathBuf,
    /// Where `soak-memory.svg` goes (nowhere when `None`).
    pub out: Option<PathBuf>,
}

/// How a soak went.
pub struct SoakReport {
    /// The report as printed.
    pub table: String,
    /// What went wrong (empty: nothing).
    pub problems: Vec<String>,
}

/// How long a peer waits for the rest of the echo once it stopped sending.
const GRACE: Duration = Duration::from_secs(60);

/// Runs the soak; prints progress on stderr.
pub fn run(opts: &SoakOptions) -> Result<SoakReport, Error> {
    if opts.ports == 0 || opts.ports > 31 {
        return Err(Error::BadInput(format!("--ports {}: 1 to 31", opts.ports)));
    }
    let dir = std::env::temp_dir().join(format!("perimeter-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(host("cannot create the socket folder"))?;
    let result = soak(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn soak(opts: &SoakOptions, dir: &Path) -> Result<SoakReport, Error> {
    let start = Instant::now();
    let until = start + opts.duration;
    let mut peers = Vec::new();
    let mut args: Vec<String> = vec!["run".into(), "--workload".into(), "echo".into()];
    for i in 0..opts.ports {
        let path = dir.join(format!("p{i}.sock"));
        let l = UnixListener::bind(&path).map_err(host("cannot listen for a port"))?;
        peers.push(
            Traffic::start(l, opts.seed ^ (i as u64) << 32, until, GRACE)
                .map_err(host("cannot start a peer"))?,
        );
        args.push("--port".into());
        args.push(format!("name=p{i},backend=connect:{}", path.display()));
    }
    let control = dir.join("control.sock");
    let fault = format!("allocb=rate:{}:{}", opts.fault_rate, opts.seed);
    let timeout = (opts.duration + GRACE * 2).as_secs().to_string();
    for a in [
        "--control",
        control.to_str().unwrap_or_default(),
        "--fault",
        &fault,
        "--guest-fault",
        &fault,
        "--memory",
        "128",
        "--timeout",
        &timeout,
        "--json",
    ] {
        args.push(a.into());
    }
    let mut child = Command::new(&opts.perimeter)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(host("cannot start perimeter"))?;
    let rss = watch(&child, &peers, start, opts.duration);
    let outcomes: Vec<Outcome> = peers.into_iter().map(Traffic::finish).collect();
    let mut problems = remove_ports(&control, opts.ports);
    let (status, stdout, stderr) = wait(&mut child, GRACE);
    let doc = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<Value>(l).ok());
    if status != Some(0) {
        problems.push(format!(
            "perimeter exited with {status:?}: {}",
            stderr.trim()
        ));
    }
    let table = report(
        opts,
        &outcomes,
        doc.as_ref(),
        &rss,
        start.elapsed(),
        &mut problems,
    );
    if let Some(dir) = &opts.out {
        let path = dir.join("soak-memory.svg");
        let drawn = std::fs::create_dir_all(dir)
            .map_err(|e| e.into())
            .and_then(|()| rss.plot(&path));
        if let Err(e) = drawn {
            problems.push(format!("cannot draw {}: {e}", path.display()));
        }
    }
    Ok(SoakReport { table, problems })
}

/// Samples the VMM's memory every second and prints progress every 10 s until the peers end.
fn watch(child: &Child, peers: &[Traffic], start: Instant, duration: Duration) -> Rss {
    let mut rss = Rss::default();
    let mut next_line = start + Duration::from_secs(10);
    while !peers.iter().all(Traffic::is_finished) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(b) = rss_bytes(child.id()) {
            rss.sample(start.elapsed(), b);
        }
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(10);
            let echoed: u64 = peers
                .iter()
                .map(|p| p.progress.echoed.load(Ordering::Relaxed))
                .sum();
            eprintln!(
                "soak: {:>5.0} of {} s, {} echoed, perimeter RSS {}",
                start.elapsed().as_secs_f64(),
                duration.as_secs(),
                mib(echoed),
                mib(rss.last)
            );
        }
    }
    rss
}

/// Hot-removes every port: the guest's echo of each ends, then the guest exits. Reads an
/// answer per command before it lets go; what went wrong is returned.
fn remove_ports(control: &Path, ports: usize) -> Vec<String> {
    let c = match UnixStream::connect(control) {
        Ok(c) => c,
        Err(e) => return vec![format!("control socket: {e}")],
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answers = std::io::BufReader::new(c);
    let mut problems = Vec::new();
    for i in 0..ports {
        let mut answer = String::new();
        let req = crate::control::Request::Remove {
            port: format!("p{i}"),
        };
        let line = serde_json::to_string(&req).expect("a request serializes");
        let asked = writeln!(answers.get_mut(), "{line}");
        let read = asked.and_then(|()| std::io::BufRead::read_line(&mut answers, &mut answer));
        let removed = serde_json::json!({ "ok": true, "removed": format!("p{i}") });
        match read {
            Ok(_) if serde_json::from_str::<serde_json::Value>(&answer).ok() == Some(removed) => {}
            Ok(_) => problems.push(format!("remove p{i}: {:?}", answer.trim())),
            Err(e) => problems.push(format!("remove p{i}: {e}")),
        }
    }
    problems
}

/// Waits for the VMM to exit (killing it after `grace`): its status, stdout and stderr.
fn wait(child: &mut Child, grace: Duration) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let status = child.wait().ok().and_then(|s| s.code());
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, out, err)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The guest's echo count for `port`, from the JSON results.
fn guest_echoed(doc: &Value, port: &str) -> Option<(u64, String)> {
    doc["results"].as_array()?.iter().find_map(|r| {
        let f: Vec<(&str, &str)> = r["fields"]
            .as_array()?
            .iter()
            .filter_map(|f| Some((f[0].as_str()?, f[1].as_str()?)))
            .collect();
        let get = |k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        (get("workload") == Some("echo") && get("port") == Some(port))
            .then(|| Some((get("bytes")?.parse().ok()?, get("check")?.to_string())))?
    })
}

fn report(
    opts: &SoakOptions,
    outcomes: &[Outcome],
    doc: Option<&Value>,
    rss: &Rss,
    took: Duration,
    problems: &mut Vec<String>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "soak: {:.0} s of traffic ({:.0} s in all), {} ports echoed by the guest, allocb faults {} host and guest side, random chunks and pauses, seed {}",
        opts.duration.as_secs_f64(),
        took.as_secs_f64(),
        opts.ports,
        opts.fault_rate,
        opts.seed
    );
    let _ = writeln!(
        t,
        "{:<5} {:>12} {:>12} {:>12} {:>8} {:>8} {:>10} {:>8} {:>6}",
        "port", "sent", "echoed", "guest echo", "compare", "pauses", "allocb-f", "retries", "drops"
    );
    let (mut sent, mut echoed) = (0u64, 0u64);
    for (i, o) in outcomes.iter().enumerate() {
        let name = format!("p{i}");
        let stats = doc.and_then(|d| {
            d["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name.as_str())
                .cloned()
        });
        let n = |k: &str| stats.as_ref().and_then(|s| s[k].as_u64()).unwrap_or(0);
        let guest = doc.and_then(|d| guest_echoed(d, &name));
        let compare = match o.mismatch_at {
            Some(at) => format!("BAD@{at}"),
            None => "equal".into(),
        };
        let _ = writeln!(
            t,
            "{:<5} {:>12} {:>12} {:>12} {:>8} {:>8} {:>10} {:>8} {:>6}",
            name,
            o.sent,
            o.echoed,
            guest.as_ref().map_or("-".into(), |g| g.0.to_string()),
            compare,
            o.pauses,
            n("allocb_failures"),
            n("bufcall_retries"),
            n("drops")
        );
        sent += o.sent;
        echoed += o.echoed;
        if let Some(at) = o.mismatch_at {
            problems.push(format!("{name}: the echo differs at byte {at}"));
        }
        if let Some(e) = &o.error {
            problems.push(format!("{name}: {e}"));
        }
        if o.echoed != o.sent {
            problems.push(format!("{name}: {} sent, {} echoed", o.sent, o.echoed));
        }
        match guest {
            Some((g, check)) if g == o.sent && check == "ok" => {}
            Some((g, check)) => problems.push(format!(
                "{name}: the guest echoed {g} of {} bytes ({check})",
                o.sent
            )),
            None => problems.push(format!("{name}: no echo result from the guest")),
        }
        if n("drops") != 0 {
            problems.push(format!("{name}: {} drops", n("drops")));
        }
    }
    let _ = writeln!(
        t,
        "total {:>12} {:>12}   ({} each way, {:.1} MiB/s)",
        sent,
        echoed,
        mib(sent),
        sent as f64 / (1 << 20) as f64 / opts.duration.as_secs_f64().max(1e-3)
    );
    let faults = |k: &str| -> u64 {
        doc.and_then(|d| d["ports"].as_array())
            .map_or(0, |ps| ps.iter().filter_map(|p| p[k].as_u64()).sum())
    };
    if opts.fault_rate > 0.0 && faults("allocb_failures") == 0 && sent > 0 {
        problems.push("no host allocation failure was injected".into());
    }
    match rss.first {
        Some((at, first)) => {
            let bounded = rss.bounded() == Some(true);
            let _ = writeln!(
                t,
                "perimeter RSS: {} at {:.0} s, at most {}, {} at the end: {}",
                mib(first),
                at.as_secs_f64(),
                mib(rss.max),
                mib(rss.last),
                if bounded { "bounded" } else { "GROWING" }
            );
            if !bounded {
                problems.push(format!(
                    "perimeter's RSS grew from {} to {}",
                    mib(first),
                    mib(rss.last)
                ));
            }
        }
        None => {
            let _ = writeln!(
                t,
                "perimeter RSS: at most {} (too short to compare)",
                mib(rss.max)
            );
        }
    }
    let _ = writeln!(
        t,
        "verdict: {}",
        if problems.is_empty() {
            "ok: every byte came back equal, nothing dropped"
        } else {
            "FAILED"
        }
    );
    t
}

fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Host { what, source }
}
