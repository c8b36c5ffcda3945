//! `perimeter bench --fault-sweep SIDE`: the guest's selftest (round trips and a stream
//! through `echo`, a checksummed stream to `sink`, a checked stream from `source`) under
//! allocb failure rates on the host side, the guest side or both, one run per rate. Per rate:
//! the allocations that failed and the bufcall retries on each side, the run's wall time, and
//! whether every check held with nothing dropped. Output: a table, `faults.json` and
//! `faults.svg` (plotters).

use crate::error::Error;
use plotters::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where allocations fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The device's STREAMS pool (`run --fault`).
    Host,
    /// The guest driver's STREAMS pool (`run --guest-fault`).
    Guest,
    /// Both at once.
    Both,
}

/// What the sweep was asked for.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Where allocations fail.
    pub side: Side,
    /// Failure probabilities, each from 0 to 1.
    pub rates: Vec<f64>,
    /// Seed of the injected failures (the guest's is this plus one).
    pub seed: u64,
    /// The perimeter binary to run.
    pub perimeter: PathBuf,
    /// Where faults.json and faults.svg go.
    pub out: PathBuf,
    /// Longest a run may take.
    pub timeout: Duration,
}

/// One rate's run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RateRun {
    /// The failure probability.
    pub rate: f64,
    /// Host allocations that failed (injected).
    pub host_failed: u64,
    /// Host bufcall retries, over every port.
    pub host_retries: u64,
    /// Guest allocations that failed.
    pub guest_failed: u64,
    /// Guest bufcall retries.
    pub guest_retries: u64,
    /// Process start to exit, seconds.
    pub secs: f64,
    /// Why the run failed its checks, if it did.
    pub problem: Option<String>,
}

/// Parses one of `--rates`: a probability from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?}: a rate is a probability from 0 to 1")),
    }
}

/// Runs the sweep; prints progress on stderr; writes faults.json and faults.svg into `out`.
/// The table, and every rate's run.
pub fn run(opts: &SweepOptions) -> Result<(String, Vec<RateRun>), Error> {
    let mut runs = Vec::new();
    for &rate in &opts.rates {
        eprintln!("perimeter bench: selftest at allocb failure rate {rate}");
        runs.push(run_one(opts, rate)?);
    }
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Host {
        what: "creating --out",
        source,
    })?;
    let doc = serde_json::json!({
        "schema": 1,
        "commit": env!("PERIMETER_COMMIT"),
        "side": opts.side,
        "seed": opts.seed,
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&doc).expect("plain data serializes");
    std::fs::write(opts.out.join("faults.json"), text + "\n").map_err(|source| Error::Host {
        what: "writing faults.json",
        source,
    })?;
    if let Err(e) = plot(opts.side, &runs, &opts.out.join("faults.svg")) {
        eprintln!("perimeter bench: faults.svg: {e}");
    }
    Ok((table(&runs), runs))
}

fn run_one(opts: &SweepOptions, rate: f64) -> Result<RateRun, Error> {
    let mut cmd = Command::new(&opts.perimeter);
    cmd.args(["run", "--json", "--timeout"])
        .arg(opts.timeout.as_secs().max(1).to_string());
    if rate > 0.0 && opts.side != Side::Guest {
        cmd.args(["--fault", &format!("allocb=rate:{rate}:{}", opts.seed)]);
    }
    if rate > 0.0 && opts.side != Side::Host {
        cmd.args([
            "--guest-fault",
            &format!("allocb=rate:{rate}:{}", opts.seed + 1),
        ]);
    }
    let t0 = Instant::now();
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Host {
            what: "starting perimeter",
            source,
        })?;
    let secs = t0.elapsed().as_secs_f64();
    let doc: Option<Value> = serde_json::from_slice(&o.stdout).ok();
    let mut run = doc.as_ref().map(figures).unwrap_or_default();
    run.rate = rate;
    run.secs = secs;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr.lines().last().unwrap_or("").to_string();
    run.problem = match (&doc, o.status.code()) {
        (None, code) => Some(format!("no JSON document (status {code:?}): {last}")),
        (Some(_), Some(0)) => doc.as_ref().and_then(problem),
        (Some(_), code) => Some(format!("status {code:?}: {last}")),
    };
    Ok(run)
}

/// The counts of one run's `--json` document.
fn figures(doc: &Value) -> RateRun {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let ports = doc["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let rx = field_of(doc, "rx");
    let guest = |k: &str| {
        rx.as_ref()
            .and_then(|f| f.iter().find(|(key, _)| key == k))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    RateRun {
        host_failed: n(&doc["pool_failed_injected"]),
        host_retries: ports.iter().map(|p| n(&p["bufcall_retries"])).sum(),
        guest_failed: guest("allocf"),
        guest_retries: guest("retries"),
        ..Default::default()
    }
}

/// The fields of the result whose workload is `workload`.
fn field_of(doc: &Value, workload: &str) -> Option<Vec<(String, String)>> {
    doc["results"].as_array()?.iter().find_map(|r| {
        let f: Vec<(String, String)> = r["fields"]
            .as_array()?
            .iter()
            .filter_map(|f| Some((f[0].as_str()?.to_string(), f[1].as_str()?.to_string())))
            .collect();
        f.iter()
            .any(|(k, v)| k == "workload" && v == workload)
            .then_some(f)
    })
}

/// What failed in a run that exited 0: a guest check, a host check, a drop.
fn problem(doc: &Value) -> Option<String> {
    for r in doc["results"].as_array()? {
        let host = r["host_check"].as_str().unwrap_or("");
        if !host.is_empty() && host != "ok" {
            return Some(format!("host check {host}: {r}"));
        }
        let check = r["fields"].as_array().and_then(|f| {
            f.iter()
                .find(|kv| kv[0] == "check")
                .and_then(|kv| kv[1].as_str())
        });
        if check.is_some_and(|c| c != "ok") {
            return Some(format!("guest check failed: {r}"));
        }
    }
    let drops: u64 = doc["ports"]
        .as_array()?
        .iter()
        .map(|p| p["drops"].as_u64().unwrap_or(0))
        .sum();
    (drops > 0).then(|| format!("{drops} buffers dropped"))
}

fn table(runs: &[RateRun]) -> String {
    let base = runs.iter().find(|r| r.rate == 0.0).map(|r| r.secs);
    let mut t = format!(
        "{:>5} {:>10} {:>8} {:>11} {:>8} {:>8} {:>6}  checks\n",
        "rate", "host fails", "retries", "guest fails", "retries", "seconds", "vs 0"
    );
    for r in runs {
        let ratio = base.map_or(String::new(), |b| format!("{:.1}x", r.secs / b));
        t += &format!(
            "{:>5} {:>10} {:>8} {:>11} {:>8} {:>8.2} {:>6}  {}\n",
            r.rate,
            r.host_failed,
            r.host_retries,
            r.guest_failed,
            r.guest_retries,
            r.secs,
            ratio,
            r.problem.as_deref().unwrap_or("ok")
        );
    }
    t
}

/// A plotted line: its name, its color, its value in a run.
type Series = (&'static str, RGBColor, fn(&RateRun) -> u64);

/// `faults.svg`: failures and retries on each side against the failure rate; a run whose
/// checks failed is a large red point.
pub fn plot(side: Side, runs: &[RateRun], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = runs
        .iter()
        .flat_map(|r| {
            [
                r.host_failed,
                r.host_retries,
                r.guest_failed,
                r.guest_retries,
            ]
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let failed = runs.iter().filter(|r| r.problem.is_some()).count();
    let verdict = match failed {
        0 => "every check held, nothing dropped".to_string(),
        n => format!("{n} run(s) FAILED their checks (red)"),
    };
    let side = match side {
        Side::Host => "the host side",
        Side::Guest => "the guest side",
        Side::Both => "both sides",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("selftest under allocb failures on {side}: {verdict}"),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..1f64, 0f64..top)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(240, 240, 240))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("allocb failure probability")
        .y_desc("allocations failed, bufcall retries (per run)")
        .draw()?;
    let series: [Series; 4] = [
        ("host allocations failed", RGBColor(31, 119, 180), |r| {
            r.host_failed
        }),
        ("host retries", RGBColor(120, 170, 220), |r| r.host_retries),
        ("guest allocations failed", RGBColor(44, 160, 44), |r| {
            r.guest_failed
        }),
        ("guest retries", RGBColor(140, 210, 130), |r| {
            r.guest_retries
        }),
    ];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = runs.iter().map(|r| (r.rate, value(r) as f64)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(runs.iter().zip(points).map(|(r, p)| match r.problem {
            None => Circle::new(p, 3, color.filled()),
            Some(_) => Circle::new(p, 7, RED.filled()),
        }))?;
    }
    super::plot::finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_probabilities() {
        for (s, r) in [("0", 0.0), ("0.5", 0.5), ("1", 1.0)] {
            assert_eq!(parse_rate(s), Ok(r));
        }
        for bad in ["", "x", "1.5", "-0.1", "nan"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_runs_figures_and_problems_come_from_its_json_document() {
        let doc = serde_json::json!({
            "pool_failed_injected": 12,
            "ports": [{"bufcall_retries": 5, "drops": 0}, {"bufcall_retries": 8, "drops": 0}],
            "results": [
                {"fields": [["workload", "rx"], ["allocf", "7"], ["retries", "6"], ["check", "ok"]],
                 "host_check": "ok"},
                {"fields": [["workload", "tx"], ["check", "ok"]], "host_check": ""}
            ]
        });
        let f = figures(&doc);
        assert_eq!(
            (
                f.host_failed,
                f.host_retries,
                f.guest_failed,
                f.guest_retries
            ),
            (12, 13, 7, 6)
        );
        assert_eq!(problem(&doc), None);
        let mut bad = doc.clone();
        bad["results"][1]["fields"][1][1] = "FAILED".into();
        assert!(problem(&bad).unwrap().contains("guest check failed"));
        let mut lost = doc.clone();
        lost["ports"][1]["drops"] = 2.into();
        assert_eq!(problem(&lost).unwrap(), "2 buffers dropped");
        let mut host = doc;
        host["results"][0]["host_check"] = "MISMATCH".into();
        assert!(problem(&host).unwrap().contains("host check MISMATCH"));
    }

    #[test]
    fn the_sweep_plot_names_its_axes_and_marks_a_failed_run() {
        let runs: Vec<RateRun> = [0.0, 0.5, 0.9]
            .iter()
            .map(|&rate| RateRun {
                rate,
                host_failed: (rate * 100.0) as u64,
                host_retries: (rate * 110.0) as u64,
                guest_failed: (rate * 50.0) as u64,
                guest_retries: (rate * 40.0) as u64,
                problem: (rate == 0.9).then(|| "lost".into()),
                ..Default::default()
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("perimeter-faults-{}.svg", std::process::id()));
        plot(Side::Both, &runs, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.contains("allocb failure probability"));
        assert!(svg.contains("allocations failed, bufcall retries (per run)"));
        assert!(svg.contains("on both sides: 1 run(s) FAILED their checks (red)"));
        assert!(svg.contains("guest retries"));
        assert!(table(&runs).lines().last().unwrap().ends_with("lost"));
    }
}
