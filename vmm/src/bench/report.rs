//! Medians over runs, the table on stdout, and the JSON document.

use super::launch::Vmm;
use super::matrix::{Cell, Kind};
use super::sample::Sample;
use device_model::console::stages::STAGES;
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
    /// Median latency at each percentile (µs), for pingpong, by the percentile's name.
    #[serde(serialize_with = "by_percentile")]
    pub latency_us: Vec<f64>,
    /// Every run's round trips pooled, for pingpong: non-empty buckets in order.
    pub latency_hist: Vec<HistBucket>,
    /// Median of the runs' floors (see [`Sample::floor`]).
    pub floor: Option<f64>,
    /// Median of each of the runs' stages (see [`Sample::stages_us`]), by the stage's name.
    #[serde(serialize_with = "by_stage")]
    pub stages_us: Vec<f64>,
    /// Bytes delivered over bytes sent, all runs together (1.0 = nothing lost).
    pub delivered_ratio: Option<f64>,
    /// The runs' problems (empty when every run checked out).
    pub problems: Vec<String>,
    /// Every run.
    pub runs: Vec<Sample>,
}

/// Round trips that took from `from_ns` up to (not including) `to_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HistBucket {
    /// The bucket's first duration.
    pub from_ns: u64,
    /// The first duration past it.
    pub to_ns: u64,
    /// Round trips in it.
    pub count: u64,
}

/// The runs' histograms added up.
fn pooled(runs: &[Sample]) -> Vec<HistBucket> {
    let mut sum = std::collections::BTreeMap::<u32, u64>::new();
    for (i, c) in runs.iter().flat_map(|r| r.latency_hist.iter().copied()) {
        *sum.entry(i).or_default() += c;
    }
    sum.into_iter()
        .map(|(i, count)| {
            let (from_ns, to_ns) = guest_abi::histogram::bounds(i);
            HistBucket {
                from_ns,
                to_ns,
                count,
            }
        })
        .collect()
}

/// `[1.0, 2.0, ...]` as `{"min_us": 1.0, "p10_us": 2.0, ...}`, by [`PERCENTILES`].
fn by_percentile<S: serde::Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let keys = super::sample::PERCENTILES
        .iter()
        .map(|(k, _)| k.replace("_ns", "_us"));
    s.collect_map(keys.zip(v.iter().copied()))
}

/// `[1.0, ...]` as `{"send_us": 1.0, ..., "round_trip_us": ...}`, by [`STAGES`].
fn by_stage<S: serde::Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let keys = STAGES
        .iter()
        .map(|k| format!("{k}_us"))
        .chain(["round_trip_us".to_string()]);
    s.collect_map(keys.zip(v.iter().copied()))
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

/// The median at each index of the runs' `field` (runs without it left out).
fn medians_by_index(runs: &[Sample], field: impl Fn(&Sample) -> &Vec<f64>) -> Vec<f64> {
    let n = runs.iter().map(|r| field(r).len()).max().unwrap_or(0);
    (0..n)
        .filter_map(|i| {
            median(
                runs.iter()
                    .filter_map(|r| field(r).get(i).copied())
                    .collect(),
            )
        })
        .collect()
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
            latency_us: medians_by_index(&runs, |r| &r.latency_us),
            latency_hist: pooled(&runs),
            floor: median(runs.iter().filter_map(|r| r.floor).collect()),
            stages_us: medians_by_index(&runs, |r| &r.stages_us),
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

/// The perimeter run's floor of a row: memcpy for throughput, the doorbell for pingpong.
fn floor_text(r: &Row) -> String {
    let floor = r
        .vmms
        .iter()
        .find(|f| f.vmm == Vmm::Perimeter)
        .and_then(|f| f.floor);
    match (r.cell.kind, floor) {
        (_, None) => "-".into(),
        (Kind::Pingpong, Some(us)) => format!("doorbell {us:.0} us"),
        (_, Some(mib)) => format!("memcpy {mib:.0} MiB/s"),
    }
}

/// Where perimeter's pingpong round trips went, stage by stage (µs); empty when no
/// row has stages.
pub fn stages_table(rows: &[Row]) -> String {
    let with: Vec<(&Row, &Vec<f64>)> = rows
        .iter()
        .filter_map(|r| {
            let f = r.vmms.iter().find(|f| f.vmm == Vmm::Perimeter)?;
            (f.stages_us.len() == STAGES.len() + 1).then_some((r, &f.stages_us))
        })
        .collect();
    if with.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{:<28}", "perimeter round trip, us");
    for name in STAGES {
        let _ = write!(out, " {name:>10}");
    }
    let _ = writeln!(out, " {:>10} {:>10}", "sum", "round trip");
    for (r, st) in with {
        let _ = write!(out, "{:<28}", r.name);
        for v in &st[..STAGES.len()] {
            let _ = write!(out, " {v:>10.1}");
        }
        let sum: f64 = st[..STAGES.len()].iter().sum();
        let _ = writeln!(out, " {sum:>10.1} {:>10.1}", st[STAGES.len()]);
    }
    out.push_str(
        "stages: send (write to ring), kick (ring to device), to_backend (device to socket), \
         peer (socket to socket), to_ring (socket to used ring), interrupt (notify to guest \
         handler), to_reader (handler to reader): a typical trip (those within 10% of the median) \
         from TSC stamps on both sides, median of the runs.\n\n",
    );
    out
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
    let _ = write!(out, " {:>20}", "floor (same run)");
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
        let _ = write!(out, " {:>20}", floor_text(r));
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
    out.push_str(&stages_table(rows));
    out.push_str(
        "floor: perimeter's guest in the same run: its memcpy of the cell's message size, or \
         the doorbell round trip (ioeventfd to irqfd) a pingpong cannot beat without polling.\n",
    );
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
