//! Medians over runs, the table on stdout, and the JSON document.

use super::launch::Vmm;
use super::matrix::{Cell, Kind};
use super::sample::{PERCENTILES, Sample};
use std::fmt::Write as _;

/// A cell's runs under one VMM and their medians.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VmmFigures {
    /// Which VMM.
    pub vmm: Vmm,
    /// Median first byte of output (ms).
    pub first_byte_ms: Option<f64>,
    /// Median time to exit (ms).
    pub exit_ms: f64,
    /// Median throughput (MiB/s).
    pub mib_s: Option<f64>,
    /// Median latency at each percentile (µs), for pingpong.
    pub latency_us: Vec<f64>,
    /// Bytes delivered over bytes sent, all runs together (1.0 = nothing lost).
    pub delivered_ratio: Option<f64>,
    /// The runs' problems (empty when every run checked out).
    pub problems: Vec<String>,
    /// Every run.
    pub runs: Vec<Sample>,
}

/// One row: a cell and its figures per VMM.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The cell, as shown.
    pub name: String,
    /// The cell.
    pub cell: Cell,
    /// perimeter first, then QEMU when compared.
    pub vmms: Vec<VmmFigures>,
    /// How many times better perimeter did than QEMU (throughput ratio; for time, QEMU's
    /// over perimeter's); none when either lost data.
    pub advantage: Option<f64>,
}

/// The median of `v` (`None` when empty).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl VmmFigures {
    /// Medians of `runs`.
    pub fn new(vmm: Vmm, runs: Vec<Sample>) -> VmmFigures {
        let (sent, delivered) = runs.iter().fold((0u64, 0u64), |(s, d), r| {
            (s + r.sent, d + r.delivered.min(r.sent))
        });
        VmmFigures {
            vmm,
            first_byte_ms: median(runs.iter().filter_map(|r| r.first_byte_ms).collect()),
            exit_ms: median(runs.iter().map(|r| r.exit_ms).collect()).unwrap_or(0.0),
            mib_s: median(runs.iter().filter_map(|r| r.mib_s).collect()),
            latency_us: (0..PERCENTILES.len())
                .filter_map(|i| {
                    median(
                        runs.iter()
                            .filter_map(|r| r.latency_us.get(i).copied())
                            .collect(),
                    )
                })
                .collect(),
            delivered_ratio: (sent > 0).then(|| delivered as f64 / sent as f64),
            problems: runs.iter().filter_map(|r| r.problem.clone()).collect(),
            runs,
        }
    }

    /// The headline figure: MiB/s, median µs, or ms to the first byte.
    pub fn headline(&self, cell: &Cell) -> Option<f64> {
        match cell.kind {
            Kind::Boot => self.first_byte_ms,
            Kind::Pingpong => self.latency_us.get(3).copied(),
            _ => self.mib_s,
        }
    }
}

impl Row {
    /// A row from the figures of each VMM (perimeter first).
    pub fn new(cell: Cell, vmms: Vec<VmmFigures>) -> Row {
        let fig = |v: Vmm| {
            vmms.iter()
                .find(|f| f.vmm == v)
                .and_then(|f| f.headline(&cell))
        };
        // A VMM that lost data did not do the same work: no speed ratio for that cell.
        let lossy = vmms
            .iter()
            .any(|f| f.delivered_ratio.is_some_and(|d| d < 1.0));
        let advantage = match (fig(Vmm::Perimeter), fig(Vmm::Qemu)) {
            _ if lossy => None,
            (Some(p), Some(q)) if p > 0.0 && q > 0.0 => {
                Some(if cell.is_throughput() { p / q } else { q / p })
            }
            _ => None,
        };
        Row {
            name: cell.to_string(),
            cell,
            vmms,
            advantage,
        }
    }
}

fn headline_text(cell: &Cell, f: &VmmFigures) -> String {
    let failed = if f.problems.is_empty() { "" } else { " !" };
    match (cell.kind, f.headline(cell)) {
        (_, None) => format!("-{failed}"),
        (Kind::Boot, Some(ms)) => format!("{ms:.1} ms ({:.0} ms exit){failed}", f.exit_ms),
        (Kind::Pingpong, Some(us)) => {
            let p99 = f.latency_us.get(6).copied().unwrap_or(0.0);
            format!("{us:.1} us (p99 {p99:.0}){failed}")
        }
        (_, Some(mib)) => format!("{mib:.0} MiB/s{failed}"),
    }
}

/// The table: one row per cell, a column per VMM, the advantage, bytes delivered / sent.
pub fn table(rows: &[Row]) -> String {
    let vmms: Vec<Vmm> = rows.first().map_or(vec![Vmm::Perimeter], |r| {
        r.vmms.iter().map(|f| f.vmm).collect()
    });
    let mut out = format!("{:<28}", "cell");
    for v in &vmms {
        let _ = write!(out, " {:>26}", v.name());
    }
    if vmms.len() > 1 {
        let _ = write!(out, " {:>9}", "advantage");
    }
    out.push_str("   delivered/sent\n");
    for r in rows {
        let _ = write!(out, "{:<28}", r.name);
        for f in &r.vmms {
            let _ = write!(out, " {:>26}", headline_text(&r.cell, f));
        }
        if vmms.len() > 1 {
            let lossy = r
                .vmms
                .iter()
                .any(|f| f.delivered_ratio.is_some_and(|d| d < 1.0));
            let adv = match r.advantage {
                Some(a) => format!("{a:.2}x"),
                None if lossy => "lossy".into(),
                None => "-".into(),
            };
            let _ = write!(out, " {adv:>9}");
        }
        let delivered: Vec<String> = r
            .vmms
            .iter()
            .map(|f| {
                f.delivered_ratio
                    .map_or("-".into(), |d| format!("{:.1}%", d * 100.0))
            })
            .collect();
        let _ = writeln!(out, "   {}", delivered.join(" / "));
    }
    out.push_str(
        "advantage: perimeter over QEMU (throughput ratio; for times, QEMU's over perimeter's; \
         `lossy`: a VMM lost data, so no ratio). `!`: a run failed or lost data (see the JSON).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::matrix::matrix;
    use super::*;

    fn sample(mib: f64, sent: u64, delivered: u64) -> Sample {
        Sample {
            mib_s: Some(mib),
            sent,
            delivered,
            exit_ms: 10.0,
            ..Default::default()
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn advantage_is_a_throughput_ratio_and_lost_bytes_show() {
        let cell = *matrix(true).iter().find(|c| c.kind == Kind::Tx).unwrap();
        let p = VmmFigures::new(
            Vmm::Perimeter,
            vec![sample(300.0, 10, 10), sample(100.0, 10, 10)],
        );
        let q = VmmFigures::new(Vmm::Qemu, vec![sample(50.0, 10, 5)]);
        let row = Row::new(cell, vec![p.clone(), q]);
        assert_eq!(
            row.advantage, None,
            "QEMU lost half: not a speed comparison"
        );
        let t = table(&[row]);
        assert!(t.contains("200 MiB/s") && t.contains("lossy"), "{t}");
        assert!(t.contains("100.0% / 50.0%"), "{t}");
        let q = VmmFigures::new(Vmm::Qemu, vec![sample(50.0, 10, 10)]);
        assert_eq!(Row::new(cell, vec![p, q]).advantage, Some(4.0));
    }

    #[test]
    fn for_times_lower_is_better() {
        let cell = matrix(true)[0];
        let f = |vmm, ms| {
            VmmFigures::new(
                vmm,
                vec![Sample {
                    first_byte_ms: Some(ms),
                    ..Default::default()
                }],
            )
        };
        let row = Row::new(cell, vec![f(Vmm::Perimeter, 10.0), f(Vmm::Qemu, 45.0)]);
        assert_eq!(row.advantage, Some(4.5));
    }
}
