//! Structured results: one `@result key=value ...` line per measurement on the debug console.
//! The VMM collects these lines (they are not printed as guest output) and shows them as a
//! table, or as JSON with `--json`.

use alloc::string::String;
use core::fmt::{Display, Write};

/// A result line being built.
pub struct Line(String);

impl Line {
    /// A result of `workload`.
    pub fn new(workload: &str) -> Line {
        let mut l = Line(String::from("@result"));
        l.add("workload", workload);
        l
    }

    /// Adds `key=value`; spaces in the value become `_` (values are single words).
    pub fn add(&mut self, key: &str, value: impl Display) -> &mut Line {
        let mut v = String::new();
        let _ = write!(v, "{value}");
        let _ = write!(self.0, " {key}={}", v.replace(' ', "_"));
        self
    }

    /// Prints the line.
    pub fn emit(&self) {
        crate::println!("{}", self.0);
    }
}

/// Median and 99th percentile of `ns` (sorted in place); zeros when empty.
pub fn percentiles(ns: &mut [u64]) -> (u64, u64) {
    ns.sort_unstable();
    (quantile(ns, 500), quantile(ns, 990))
}

/// The `per_mille`/1000 quantile of sorted `ns` (nearest rank; 0 when empty).
pub fn quantile(sorted: &[u64], per_mille: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    if per_mille == 500 {
        return sorted[sorted.len() / 2];
    }
    let rank = (sorted.len() * per_mille)
        .div_ceil(1000)
        .clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Throughput in MiB/s of `bytes` moved in `ns`.
pub fn mib_per_s(bytes: u64, ns: u64) -> u64 {
    ((u128::from(bytes) * 1_000_000_000) / (u128::from(ns.max(1)) << 20)) as u64
}
