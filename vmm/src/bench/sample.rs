//! What one run measured, read from the guest's results and the host peers, with the check
//! that nothing was lost or changed.

use super::launch::RunOutput;
use super::matrix::{Cell, Kind};
use crate::results::GuestResult;
use device_model::console::stages::STAGES;

/// The latency percentiles a pingpong reports, in order (keys of its `@result`).
pub const PERCENTILES: [(&str, f64); 9] = [
    ("min_ns", 0.0),
    ("p10_ns", 10.0),
    ("p25_ns", 25.0),
    ("median_ns", 50.0),
    ("p75_ns", 75.0),
    ("p90_ns", 90.0),
    ("p99_ns", 99.0),
    ("p999_ns", 99.9),
    ("max_ns", 100.0),
];

/// One run's figures.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Process start to the guest's first byte of output (ms).
    pub first_byte_ms: Option<f64>,
    /// Process start to exit (ms).
    pub exit_ms: f64,
    /// Throughput the guest measured (MiB/s); for several ports, all bytes over the slowest.
    pub mib_s: Option<f64>,
    /// Round-trip latency at each of [`PERCENTILES`] (µs).
    pub latency_us: Vec<f64>,
    /// The same run's floor: the guest's memcpy (MiB/s) for tx and rx, the doorbell round
    /// trip (µs) for pingpong; `None` where the guest could not measure it.
    pub floor: Option<f64>,
    /// Where a pingpong's round trip went: each of `STAGES` in a typical trip (µs), then the
    /// median round trip of the trips matched; empty when the VMM cannot stamp them.
    pub stages_us: Vec<f64>,
    /// Every round trip of a pingpong, as (bucket, count) of `guest_abi::histogram` (pooled
    /// into [`super::report::VmmFigures::latency_hist`], so not written per run).
    #[serde(skip)]
    pub latency_hist: Vec<(u32, u64)>,
    /// Bytes the guest sent (tx) or asked for (rx, pingpong).
    pub sent: u64,
    /// Bytes that arrived intact: counted by the host peers (tx), checked by the guest (rx,
    /// pingpong).
    pub delivered: u64,
    /// Why the run failed or lost data; `None` when everything checked out.
    pub problem: Option<String>,
}

impl Sample {
    /// Reads `run` of `cell`.
    pub fn from_run(cell: &Cell, run: &RunOutput) -> Sample {
        let mut s = Sample {
            first_byte_ms: run.first_byte.map(|d| d.as_secs_f64() * 1e3),
            exit_ms: run.wall.as_secs_f64() * 1e3,
            ..Default::default()
        };
        let failed = if run.timed_out {
            Some(format!("timed out: {}", run.last_words))
        } else if run.guest_exit != Some(0) {
            Some(format!("{}: {}", run.status, run.last_words))
        } else {
            None
        };
        let of = |w: &'static str| {
            run.results
                .iter()
                .filter(move |r| r.get("workload") == Some(w))
        };
        let num = |r: &GuestResult, k: &str| r.get(k).and_then(|v| v.parse::<u64>().ok());
        match cell.kind {
            Kind::Boot => {}
            Kind::Tx | Kind::ConsoleSlowReader => {
                let port = if cell.kind == Kind::Tx { 1 } else { 0 };
                let peer = run.peers.get(port).copied().unwrap_or_default();
                s.delivered = peer.bytes_in;
                if let Some(r) = of("tx").next() {
                    s.sent = num(r, "bytes").unwrap_or(0);
                    s.mib_s = num(r, "mib_s").map(|v| v as f64);
                    s.floor = num(r, "memcpy_mib_s").map(|v| v as f64);
                    let crc = u32::from_str_radix(r.get("crc").unwrap_or(""), 16).ok();
                    if s.delivered == s.sent && crc != Some(peer.crc_in) {
                        s.problem = Some("the host's CRC differs from the guest's".into());
                    }
                }
            }
            Kind::Rx => {
                s.sent = cell.amount;
                if let Some(r) = of("rx").next() {
                    if r.get("check") == Some("ok") {
                        s.delivered = num(r, "bytes").unwrap_or(0);
                    } else {
                        s.problem = Some("the guest received bytes out of pattern".into());
                    }
                    s.mib_s = num(r, "mib_s").map(|v| v as f64);
                    s.floor = num(r, "memcpy_mib_s").map(|v| v as f64);
                }
            }
            Kind::Pingpong => {
                s.sent = cell.amount * cell.size as u64;
                if let Some(r) = of("pingpong").next() {
                    s.delivered = num(r, "count").unwrap_or(0) * num(r, "size").unwrap_or(0);
                    s.latency_us = PERCENTILES
                        .iter()
                        .map(|(k, _)| num(r, k).unwrap_or(0) as f64 / 1e3)
                        .collect();
                    s.floor = num(r, "doorbell_ns")
                        .filter(|&n| n > 0)
                        .map(|n| n as f64 / 1e3);
                    s.latency_hist = r
                        .get("hist")
                        .and_then(guest_abi::histogram::parse)
                        .map(Iterator::collect)
                        .unwrap_or_default();
                }
                if let Some(r) = of("stages").next()
                    && num(r, "joined").is_some_and(|j| j > 0)
                    && r.get("problem").is_none()
                {
                    s.stages_us = STAGES
                        .iter()
                        .map(|k| format!("{k}_ns"))
                        .chain(["round_trip_ns".to_string()])
                        .map(|k| num(r, &k).unwrap_or(0) as f64 / 1e3)
                        .collect();
                }
            }
            Kind::Fairness => {
                let rs: Vec<&GuestResult> = of("fairness").collect();
                s.sent = rs.iter().filter_map(|r| num(r, "bytes")).sum();
                s.delivered = run.peers.iter().skip(1).map(|p| p.bytes_in).sum();
                let slowest = rs.iter().filter_map(|r| num(r, "ns")).max().unwrap_or(0);
                if !rs.is_empty() && slowest > 0 {
                    s.mib_s = Some(s.sent as f64 * 1e9 / slowest as f64 / 1048576.0);
                }
                if rs.iter().any(|r| r.get("check") != Some("ok")) {
                    s.problem = Some("a port stalled or hung up".into());
                }
            }
        }
        if s.delivered < s.sent && s.problem.is_none() {
            s.problem = Some(format!("{} of {} bytes delivered", s.delivered, s.sent));
        }
        if let Some(f) = failed {
            s.problem = Some(f);
        } else if cell.kind != Kind::Boot && s.sent == 0 {
            s.problem = Some("the guest reported no result".into());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::matrix::matrix;
    use super::super::peer::PeerReport;
    use super::*;
    use std::time::Duration;

    fn run(results: &[&str], peers: Vec<PeerReport>) -> RunOutput {
        RunOutput {
            guest_exit: Some(0),
            status: "exit status: 0".into(),
            timed_out: false,
            first_byte: Some(Duration::from_millis(5)),
            wall: Duration::from_millis(9),
            last_words: String::new(),
            results: results.iter().map(|l| GuestResult::parse(l)).collect(),
            peers,
        }
    }

    fn cell(kind: Kind) -> Cell {
        *matrix(true).iter().find(|c| c.kind == kind).unwrap()
    }

    fn peer(bytes_in: u64, crc_in: u32) -> PeerReport {
        PeerReport {
            bytes_in,
            crc_in,
            ..Default::default()
        }
    }

    #[test]
    fn a_tx_whose_bytes_and_crc_arrived_is_clean() {
        let r = run(
            &["workload=tx bytes=100 mib_s=7 crc=0000abcd"],
            vec![peer(0, 0), peer(100, 0xabcd)],
        );
        let s = Sample::from_run(&cell(Kind::Tx), &r);
        assert_eq!((s.sent, s.delivered, s.mib_s), (100, 100, Some(7.0)));
        assert_eq!(s.problem, None);
    }

    #[test]
    fn lost_bytes_and_changed_bytes_are_problems() {
        let lost = run(
            &["workload=tx bytes=100 crc=0000abcd"],
            vec![peer(40, 1), peer(0, 0)],
        );
        let s = Sample::from_run(&cell(Kind::ConsoleSlowReader), &lost);
        assert_eq!(s.delivered, 40);
        assert_eq!(s.problem.as_deref(), Some("40 of 100 bytes delivered"));
        let changed = run(
            &["workload=tx bytes=100 crc=0000abcd"],
            vec![peer(0, 0), peer(100, 1)],
        );
        assert!(
            Sample::from_run(&cell(Kind::Tx), &changed)
                .problem
                .unwrap()
                .contains("CRC")
        );
    }

    #[test]
    fn a_failed_guest_or_a_missing_result_is_a_problem() {
        let mut r = run(&[], vec![peer(0, 0), peer(0, 0)]);
        assert!(Sample::from_run(&cell(Kind::Rx), &r).problem.is_some());
        r.guest_exit = Some(1);
        assert!(Sample::from_run(&cell(Kind::Boot), &r).problem.is_some());
    }

    #[test]
    fn fairness_adds_ports_and_divides_by_the_slowest() {
        let r = run(
            &[
                "workload=fairness bytes=1048576 ns=500000000 check=ok",
                "workload=fairness bytes=1048576 ns=1000000000 check=ok",
            ],
            vec![peer(0, 0), peer(1048576, 0), peer(1048576, 0)],
        );
        let s = Sample::from_run(&cell(Kind::Fairness), &r);
        assert_eq!(s.mib_s, Some(2.0));
        assert_eq!(s.problem, None);
    }

    #[test]
    fn pingpong_reads_every_percentile() {
        let line = "workload=pingpong size=64 count=500 min_ns=1000 p10_ns=2000 p25_ns=3000 \
                    median_ns=4000 p75_ns=5000 p90_ns=6000 p99_ns=7000 p999_ns=8000 max_ns=9000";
        let s = Sample::from_run(&cell(Kind::Pingpong), &run(&[line], vec![]));
        assert_eq!(
            s.latency_us,
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!((s.sent, s.delivered), (500 * 64, 500 * 64));
        assert_eq!(s.problem, None);
    }
}
