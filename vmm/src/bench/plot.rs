//! SVG plots of a benchmark run (plotters), each naming its axes:
//!
//! - `throughput.svg`: a group of bars per throughput cell, one bar per VMM at its median,
//!   a whisker from the slowest run to the fastest;
//! - `latency.svg`: each pingpong cell's round trips, pooled over every run from the guest's
//!   histograms, as latency against percentile (a tail plot: 90%, 99%, 99.9% spaced alike);
//! - `advantage.svg` (with `--vs-qemu`): perimeter's advantage per cell, a bar from the 1×
//!   line (the same as QEMU) up or down to it.
//!
//! A color per VMM (throughput, advantage) or per message size (latency); QEMU's latency
//! lines are dashed.

use super::launch::Vmm;
use super::matrix::{Kind, SIZES, human_size};
use super::report::{Row, VmmFigures};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// One color per VMM or message size.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn vmm_color(v: Vmm) -> RGBColor {
    match v {
        Vmm::Perimeter => COLORS[0],
        Vmm::Qemu => COLORS[3],
    }
}

/// The label at categorical position `x` (an integer), or nothing between them.
fn category_label(labels: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// A log-scale range holding `ys` (and `also`), with some room around it.
fn log_range(ys: impl Iterator<Item = f64>, also: Option<f64>) -> (f64, f64) {
    let (lo, hi) = ys
        .chain(also)
        .filter(|y| *y > 0.0 && y.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo <= hi {
        (lo / 1.6, hi * 1.6)
    } else {
        (1.0, 10.0)
    }
}

fn canvas(
    path: &Path,
    size: (u32, u32),
) -> Result<DrawingArea<SVGBackend<'_>, Shift>, Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// Draws the legend at `at` on `chart` and writes `root`'s file.
pub(crate) fn finish<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    root: &DrawingArea<SVGBackend<'b>, Shift>,
    at: SeriesLabelPosition,
) -> PlotResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(at)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A chart of one category per cell (labelled by `labels`) against a log scale from `lo` to
/// `hi`, its axes named.
fn cell_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    labels: &[String],
    (lo, hi): (f64, f64),
    y_desc: &str,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, SVGBackend<'b>, CellCoord>, Box<dyn std::error::Error>> {
    let n = labels.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..n - 0.5, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len() * 4 + 1)
        .x_label_formatter(&|x| category_label(labels, *x))
        .x_label_style(("sans-serif", 11))
        .y_label_formatter(y_label)
        .light_line_style(RGBColor(240, 240, 240))
        .x_desc("cell (workload, message size, ports)")
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// Categories (cells) across, a log scale up.
type CellCoord = Cartesian2d<RangedCoordf64, LogCoord<f64>>;

/// `throughput.svg`: per throughput cell, each VMM's median MiB/s as a bar, and a whisker
/// from its slowest run to its fastest.
pub fn throughput(rows: &[Row], path: &Path) -> PlotResult {
    let cells: Vec<&Row> = rows
        .iter()
        .filter(|r| r.cell.is_throughput() && r.cell.kind != Kind::ConsoleSlowReader)
        .collect();
    let labels: Vec<String> = cells.iter().map(|r| r.name.clone()).collect();
    let runs = |f: &VmmFigures| -> Vec<f64> { f.runs.iter().filter_map(|s| s.mib_s).collect() };
    let (lo, hi) = log_range(
        cells.iter().flat_map(|r| r.vmms.iter().flat_map(runs)),
        None,
    );
    let most_runs = cells
        .iter()
        .flat_map(|r| r.vmms.iter().map(|f| f.runs.len()))
        .max()
        .unwrap_or(0);
    let root = canvas(path, (1400, 640))?;
    let y_desc = format!(
        "MiB/s, log scale: bar = median of {most_runs} run(s), whisker = slowest to fastest"
    );
    let mut chart = cell_chart(&root, "throughput", &labels, (lo, hi), &y_desc, &|y| {
        format!("{y:.0}")
    })?;
    let nv = cells.first().map_or(1, |r| r.vmms.len()).max(1);
    let width = 0.8 / nv as f64;
    for v in 0..nv {
        let Some(vmm) = cells.first().map(|r| r.vmms[v].vmm) else {
            break;
        };
        let color = vmm_color(vmm);
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (c, r) in cells.iter().enumerate() {
            let Some(f) = r.vmms.get(v) else { continue };
            let x0 = c as f64 - 0.4 + v as f64 * width;
            let mid = x0 + width / 2.0;
            if let Some(m) = f.mib_s.filter(|m| *m > 0.0) {
                bars.push(Rectangle::new(
                    [(x0 + 0.01, lo), (x0 + width - 0.01, m)],
                    color.mix(0.75).filled(),
                ));
            }
            let r = runs(f);
            let (min, max) = r
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
            if min <= max && min > 0.0 {
                let cap = width / 4.0;
                whiskers.push(PathElement::new(
                    vec![(mid, min), (mid, max)],
                    BLACK.stroke_width(1),
                ));
                for y in [min, max] {
                    whiskers.push(PathElement::new(
                        vec![(mid - cap, y), (mid + cap, y)],
                        BLACK.stroke_width(1),
                    ));
                }
            }
        }
        chart
            .draw_series(bars)?
            .label(vmm.name())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.75).filled())
            });
        chart.draw_series(whiskers)?;
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

/// Percentile `p` (0 to 1) on the tail axis: 0 at 0%, 1 at 90%, 2 at 99%, 3 at 99.9%.
fn nines(p: f64) -> f64 {
    -(1.0 - p).max(1e-9).log10()
}

/// The tail axis's label at a whole `x`: 0%, 90%, 99%, 99.9%, ...
fn nines_label(x: f64) -> String {
    let n = x.round();
    if (x - n).abs() > 1e-6 || n < 0.0 {
        return String::new();
    }
    let p = 100.0 * (1.0 - 10f64.powi(-(n as i32)));
    format!("{}%", (p * 1e3).round() / 1e3)
}

/// `latency.svg`: each pingpong cell's pooled round trips, latency against percentile.
pub fn latency(rows: &[Row], path: &Path) -> PlotResult {
    struct Line {
        name: String,
        color: RGBColor,
        dashed: bool,
        points: Vec<(f64, f64)>,
    }
    let mut lines = Vec::new();
    let mut most = 0u64;
    for r in rows.iter().filter(|r| r.cell.kind == Kind::Pingpong) {
        let color =
            COLORS[SIZES.iter().position(|&s| s == r.cell.size).unwrap_or(0) % COLORS.len()];
        for f in &r.vmms {
            let total: u64 = f.latency_hist.iter().map(|b| b.count).sum();
            if total == 0 {
                continue;
            }
            most = most.max(total);
            // At percentile p (the round trips up to this bucket), latency is below its end.
            let mut below = 0u64;
            let mut points = Vec::new();
            for b in &f.latency_hist {
                let p = below as f64 / total as f64;
                points.push((nines(p), b.to_ns as f64 / 1e3));
                below += b.count;
            }
            points.push((
                nines(1.0 - 1.0 / total as f64).max(points.last().map_or(0.0, |p| p.0)),
                f.latency_hist.last().map_or(0.0, |b| b.to_ns as f64 / 1e3),
            ));
            lines.push(Line {
                name: format!(
                    "{} {} ({total} round trips)",
                    f.vmm.name(),
                    human_size(r.cell.size as u64)
                ),
                color,
                dashed: f.vmm == Vmm::Qemu,
                points,
            });
        }
    }
    let (lo, hi) = log_range(
        lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
        None,
    );
    let right = nines(1.0 - 1.0 / most.max(10) as f64).ceil().max(1.0);
    let root = canvas(path, (960, 600))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("pingpong round trips, every run pooled", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..right, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(right as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(240, 240, 240))
        .x_desc("percentile of round trips (tail scale: 90%, 99%, 99.9% equally spaced)")
        .y_desc("round trip, µs (log scale)")
        .draw()?;
    for l in &lines {
        let style = ShapeStyle::from(&l.color).stroke_width(2);
        let pts = l.points.iter().copied();
        let drawn = if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(pts, style))?
        };
        let len = if l.dashed { 8 } else { 20 };
        drawn
            .label(l.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + len, y)], style));
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

/// `advantage.svg`: perimeter's advantage over QEMU per cell, a bar from the 1× line. Draws
/// nothing and returns false when no cell has one (no `--vs-qemu`).
pub fn advantage(rows: &[Row], path: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let cells: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| Some((r, r.advantage?)))
        .collect();
    if cells.is_empty() {
        return Ok(false);
    }
    let labels: Vec<String> = cells.iter().map(|(r, _)| r.name.clone()).collect();
    let (lo, hi) = log_range(cells.iter().map(|c| c.1), Some(1.0));
    let root = canvas(path, (1600, 640))?;
    let n = cells.len() as f64;
    let mut chart = cell_chart(
        &root,
        "perimeter against QEMU, same guest, same host peers",
        &labels,
        (lo, hi),
        "perimeter's advantage, × (throughput ratio, or QEMU's time over ours; log scale)",
        &|y| format!("{y:.1}×"),
    )?;
    let (ahead, behind) = (COLORS[2], COLORS[1]);
    chart.draw_series(cells.iter().enumerate().map(|(i, &(_, a))| {
        let x = i as f64;
        let color = if a >= 1.0 { ahead } else { behind };
        Rectangle::new([(x - 0.3, 1.0), (x + 0.3, a)], color.mix(0.8).filled())
    }))?;
    // Each bar's figure, just beyond its end.
    chart.draw_series(cells.iter().enumerate().map(|(i, &(_, a))| {
        // Text hangs below its anchor: above a bar's top, or just below a bar's bottom.
        let y = if a >= 1.0 { a * 1.22 } else { a / 1.03 };
        Text::new(format!("{a:.2}×"), (i as f64 - 0.2, y), ("sans-serif", 12))
    }))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 1.0), (n - 0.5, 1.0)],
            BLACK.stroke_width(2),
        )))?
        .label("1×: the same as QEMU")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    finish(&mut chart, &root, SeriesLabelPosition::UpperRight)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::matrix::matrix;
    use super::super::report::VmmFigures;
    use super::super::sample::Sample;
    use super::*;

    fn rows(vmms: &[Vmm]) -> Vec<Row> {
        matrix(true)
            .into_iter()
            .map(|c| {
                let figures = vmms
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| {
                        let runs = (1..=3)
                            .map(|i| Sample {
                                mib_s: Some((100.0 + c.size as f64) * i as f64 / (k + 1) as f64),
                                latency_hist: vec![(40, 10 * i), (44, 5), (60, 1)],
                                first_byte_ms: Some(10.0 * (k + 1) as f64),
                                sent: 1,
                                delivered: 1,
                                ..Default::default()
                            })
                            .collect();
                        VmmFigures::new(v, runs)
                    })
                    .collect();
                Row::new(c, figures)
            })
            .collect()
    }

    fn drawn(name: &str, draw: impl FnOnce(&Path)) -> String {
        let dir =
            std::env::temp_dir().join(format!("perimeter-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        draw(&path);
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.200}");
        svg
    }

    #[test]
    fn throughput_draws_a_bar_and_whisker_per_vmm_and_names_its_axes() {
        let rows = rows(&[Vmm::Perimeter, Vmm::Qemu]);
        let svg = drawn("t.svg", |p| throughput(&rows, p).unwrap());
        assert!(svg.contains("cell (workload, message size, ports)"));
        assert!(svg.contains("bar = median of 3 run(s), whisker = slowest to fastest"));
        assert!(svg.contains("tx 64 KiB x16 ports") && svg.contains("qemu"));
    }

    #[test]
    fn latency_draws_pooled_round_trips_against_percentile_and_names_its_axes() {
        let rows = rows(&[Vmm::Perimeter]);
        let svg = drawn("l.svg", |p| latency(&rows, p).unwrap());
        assert!(svg.contains("percentile of round trips"));
        assert!(svg.contains("round trip, µs (log scale)"));
        // 16 + 26 + 36 round trips in its three runs.
        assert!(
            svg.contains("perimeter 64 B (78 round trips)"),
            "pooled over 3 runs"
        );
        assert!(svg.contains("99%") && svg.contains("90%"));
    }

    #[test]
    fn advantage_draws_the_1x_line_and_names_its_axes_or_nothing_without_qemu() {
        let rows2 = rows(&[Vmm::Perimeter, Vmm::Qemu]);
        let svg = drawn("a.svg", |p| assert!(advantage(&rows2, p).unwrap()));
        assert!(svg.contains("1×: the same as QEMU"));
        assert!(svg.contains("advantage, × (throughput ratio"), "{svg}");
        let alone = rows(&[Vmm::Perimeter]);
        let dir = std::env::temp_dir();
        let path = dir.join(format!("perimeter-no-advantage-{}.svg", std::process::id()));
        assert!(!advantage(&alone, &path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn the_tail_axis_is_labelled_at_round_percentiles() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(nines(0.99)), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(1.5), "");
    }
}
