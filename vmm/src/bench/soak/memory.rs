//! The VMM's resident memory during a soak: sampled from `/proc/PID/status` every second,
//! checked for growth, and drawn (`soak-memory.svg`: MiB against seconds, with the bound
//! the soak holds it to).

use plotters::prelude::*;
use std::path::Path;
use std::time::Duration;

/// Resident memory may grow this much between the first sample and the last.
pub const RSS_SLACK: u64 = 32 << 20;
/// The first sample that counts is taken this long after traffic starts (the guest's
/// buffers are in place by then).
pub const WARM_UP: Duration = Duration::from_secs(5);
/// Samples kept for the plot: a day at one a second; past that every other one is dropped.
const MAX_SAMPLES: usize = 86_400;

/// Resident memory of a running process, from `/proc/PID/status` (bytes).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// Resident-memory samples of the VMM.
#[derive(Default, Debug)]
pub struct Rss {
    /// The first sample after [`WARM_UP`]: (when, bytes).
    pub first: Option<(Duration, u64)>,
    /// The latest sample.
    pub last: u64,
    /// The largest sample.
    pub max: u64,
    /// Every sample (thinned past [`MAX_SAMPLES`]): (when, bytes).
    pub samples: Vec<(Duration, u64)>,
}

impl Rss {
    /// Records `bytes` resident at `at` since traffic started.
    pub fn sample(&mut self, at: Duration, bytes: u64) {
        if self.first.is_none() && at >= WARM_UP {
            self.first = Some((at, bytes));
        }
        self.last = bytes;
        self.max = self.max.max(bytes);
        if self.samples.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.samples.push((at, bytes));
    }

    /// Whether the last sample stays within [`RSS_SLACK`] of the first that counts.
    pub fn bounded(&self) -> Option<bool> {
        self.first.map(|(_, first)| self.last <= first + RSS_SLACK)
    }

    /// `soak-memory.svg`: the samples, and the line the last one must stay under.
    pub fn plot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        const MIB: f64 = 1048576.0;
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|&(t, b)| (t.as_secs_f64(), b as f64 / MIB))
            .collect();
        let bound = self.first.map(|(_, f)| (f + RSS_SLACK) as f64 / MIB);
        let end = points.last().map_or(1.0, |p| p.0).max(1.0);
        let top = points
            .iter()
            .map(|p| p.1)
            .chain(bound)
            .fold(1.0f64, f64::max)
            * 1.15;
        let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "perimeter's resident memory during the soak",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end, 0f64..top)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .x_desc("seconds since traffic started")
            .y_desc("resident memory (VmRSS), MiB")
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(points, blue.stroke_width(2)))?
            .label("perimeter RSS, sampled every second")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        if let (Some(b), Some((from, _))) = (bound, self.first) {
            let red = RGBColor(214, 39, 40);
            chart
                .draw_series(DashedLineSeries::new(
                    [(from.as_secs_f64(), b), (end, b)],
                    8,
                    5,
                    red.stroke_width(2),
                ))?
                .label(format!(
                    "bound: the sample at {:.0} s plus {} MiB",
                    from.as_secs_f64(),
                    RSS_SLACK >> 20
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2))
                });
        }
        crate::bench::plot::finish(&mut chart, &root, SeriesLabelPosition::LowerRight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process_is_read() {
        let b = rss_bytes(std::process::id()).expect("VmRSS");
        assert!(b > 1 << 20, "{b}");
    }

    #[test]
    fn memory_is_compared_from_the_first_sample_after_warm_up() {
        let mut r = Rss::default();
        r.sample(Duration::from_secs(1), 100);
        r.sample(WARM_UP, 50);
        r.sample(WARM_UP * 2, 70);
        assert_eq!((r.first, r.last, r.max), (Some((WARM_UP, 50)), 70, 100));
    }

    #[test]
    fn samples_are_judged_against_the_first_after_warm_up_and_drawn_with_named_axes() {
        let mut rss = Rss::default();
        for s in 0..30u64 {
            rss.sample(Duration::from_secs(s), (20 << 20) + s * 4096);
        }
        assert_eq!(rss.first.map(|f| f.0), Some(WARM_UP));
        assert_eq!(rss.bounded(), Some(true));
        rss.sample(Duration::from_secs(31), 200 << 20);
        assert_eq!(rss.bounded(), Some(false));
        let path = std::env::temp_dir().join(format!("perimeter-soak-{}.svg", std::process::id()));
        rss.plot(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.contains("seconds since traffic started"));
        assert!(svg.contains("resident memory (VmRSS), MiB"));
        assert!(svg.contains("bound: the sample at 5 s plus 32 MiB"));
    }

    #[test]
    fn a_long_soak_keeps_a_bounded_number_of_samples() {
        let mut rss = Rss::default();
        for s in 0..(MAX_SAMPLES as u64 * 3) {
            rss.sample(Duration::from_secs(s), 1);
        }
        assert!(rss.samples.len() <= MAX_SAMPLES);
        assert_eq!(
            rss.samples.last().unwrap().0,
            Duration::from_secs(MAX_SAMPLES as u64 * 3 - 1)
        );
    }
}
