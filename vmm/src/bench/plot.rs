//! SVG plots of a benchmark run (plotters): throughput by message size, and the round-trip
//! latency distribution. A color per workload (or message size), shared by both VMMs; QEMU's
//! lines are dashed.

use super::launch::Vmm;
use super::matrix::{Kind, SIZES, human_size};
use super::report::{Row, VmmFigures};
use super::sample::PERCENTILES;
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// One color per workload or message size.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// A named line of (x, y) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
}

impl Series {
    fn new(f: &VmmFigures, what: String, color: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: format!("{} {what}", f.vmm.name()),
            points,
            color: COLORS[color % COLORS.len()],
            dashed: f.vmm == Vmm::Qemu,
        }
    }
}

/// `throughput.svg`: MiB/s against message size for tx, rx and multi-port tx, per VMM.
pub fn throughput(rows: &[Row], path: &Path) -> PlotResult {
    let workloads = [
        (Kind::Tx, 1, "tx"),
        (Kind::Rx, 1, "rx"),
        (Kind::Fairness, 4, "tx x4 ports"),
        (Kind::Fairness, 16, "tx x16 ports"),
    ];
    let mut series = Vec::new();
    for (color, (kind, ports, label)) in workloads.into_iter().enumerate() {
        let cells: Vec<&Row> = rows
            .iter()
            .filter(|r| r.cell.kind == kind && r.cell.ports == ports)
            .collect();
        for v in 0..cells.first().map_or(0, |r| r.vmms.len()) {
            let points: Vec<(f64, f64)> = cells
                .iter()
                .filter_map(|r| Some((size_index(r.cell.size)?, r.vmms[v].mib_s?)))
                .collect();
            if !points.is_empty() {
                series.push(Series::new(&cells[0].vmms[v], label.into(), color, points));
            }
        }
    }
    let labels: Vec<String> = SIZES.iter().map(|&s| human_size(s as u64)).collect();
    let title = "Throughput by message size, guest-measured (dashed: QEMU)";
    draw(path, title, "MiB/s", &labels, &series)
}

/// `latency.svg`: round-trip µs at each percentile, per VMM and message size.
pub fn latency(rows: &[Row], path: &Path) -> PlotResult {
    let mut series = Vec::new();
    let pingpongs = rows.iter().filter(|r| r.cell.kind == Kind::Pingpong);
    for (color, r) in pingpongs.enumerate() {
        for f in &r.vmms {
            let points: Vec<(f64, f64)> = f
                .latency_us
                .iter()
                .enumerate()
                .map(|(i, &us)| (i as f64, us))
                .collect();
            if !points.is_empty() {
                let size = human_size(r.cell.size as u64);
                series.push(Series::new(f, size, color, points));
            }
        }
    }
    let labels: Vec<String> = PERCENTILES
        .iter()
        .map(|(k, _)| {
            k.trim_end_matches("_ns")
                .replace("median", "p50")
                .replace("p999", "p99.9")
        })
        .collect();
    let title = "Round-trip latency distribution, pingpong (dashed: QEMU)";
    draw(path, title, "microseconds", &labels, &series)
}

fn size_index(size: usize) -> Option<f64> {
    SIZES.iter().position(|&s| s == size).map(|i| i as f64)
}

/// Lines over categorical x positions 0..labels.len(), y on a log scale.
fn draw(
    path: &Path,
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[Series],
) -> PlotResult {
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| *y > 0.0);
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if lo <= hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (1.0, 10.0)
    };
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let last = labels.len().saturating_sub(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..last + 0.2, (lo..hi).log_scale())?;
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(labels.len() * 4 + 1)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(240, 240, 240))
        .y_desc(y_desc)
        .draw()?;
    for s in series {
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        let points = s.points.iter().copied();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        let legend_len = if s.dashed { 8 } else { 20 };
        drawn
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + legend_len, y)], style));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, style.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::matrix::matrix;
    use super::super::report::VmmFigures;
    use super::super::sample::Sample;
    use super::*;

    #[test]
    fn plots_are_svg_files_naming_each_series() {
        let rows: Vec<Row> = matrix(true)
            .into_iter()
            .map(|c| {
                let s = Sample {
                    mib_s: Some(100.0 + c.size as f64),
                    latency_us: (1..=9).map(f64::from).collect(),
                    ..Default::default()
                };
                Row::new(c, vec![VmmFigures::new(Vmm::Perimeter, vec![s])])
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("perimeter-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        throughput(&rows, &dir.join("t.svg")).unwrap();
        latency(&rows, &dir.join("l.svg")).unwrap();
        let t = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        assert!(
            t.starts_with("<svg") && t.contains("perimeter tx x16 ports"),
            "{t:.200}"
        );
        let l = std::fs::read_to_string(dir.join("l.svg")).unwrap();
        assert!(l.contains("perimeter 64 KiB") && l.contains("p99.9"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
