//! The `workload=NAME[:ARGS]` word of the built-in guest's command line: which workloads exist
//! and what their arguments may be. The VMM checks a workload with [`check`] before it boots
//! anything, and the guest checks it again before running it, so the two cannot disagree.

use core::fmt;

/// How one argument of a workload is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    /// A number with an optional K, M or G suffix (or 0x hex), from `min` to `max`.
    Size { min: u64, max: u64 },
    /// A port's name.
    Port,
}

const ANY: u64 = u64::MAX;
const MSG_MAX: u64 = 1 << 20;

/// One workload: its name, its arguments (the first `required` must be given) and its usage.
struct Workload {
    name: &'static str,
    args: &'static [(&'static str, Arg)],
    required: usize,
    usage: &'static str,
}

const fn plain(name: &'static str) -> Workload {
    Workload {
        name,
        args: &[],
        required: 0,
        usage: name,
    }
}

const fn size(min: u64, max: u64) -> Arg {
    Arg::Size { min, max }
}

const WORKLOADS: &[Workload] = &[
    plain("selftest"),
    plain("hello"),
    plain("boot"),
    plain("panic"),
    plain("fault"),
    plain("ud"),
    plain("uart"),
    plain("hang"),
    plain("hostile"),
    Workload {
        name: "echo",
        args: &[("BYTES", size(1, ANY))],
        required: 0,
        usage: "echo[:BYTES]",
    },
    Workload {
        name: "tx",
        args: &[
            ("SIZE", size(8, MSG_MAX)),
            ("TOTAL", size(1, ANY)),
            ("PORT", Arg::Port),
        ],
        required: 2,
        usage: "tx:SIZE:TOTAL[:PORT] (SIZE 8 to 1M)",
    },
    Workload {
        name: "rx",
        args: &[
            ("SIZE", size(1, MSG_MAX)),
            ("TOTAL", size(1, ANY)),
            ("PORT", Arg::Port),
        ],
        required: 2,
        usage: "rx:SIZE:TOTAL[:PORT] (SIZE 1 to 1M)",
    },
    Workload {
        name: "pingpong",
        args: &[
            ("SIZE", size(1, MSG_MAX)),
            ("COUNT", size(1, ANY)),
            ("PORT", Arg::Port),
        ],
        required: 2,
        usage: "pingpong:SIZE:COUNT[:PORT] (SIZE 1 to 1M)",
    },
    Workload {
        name: "fairness",
        args: &[
            ("PORTS", size(0, 31)),
            ("TOTAL", size(1, ANY)),
            ("SIZE", size(1, MSG_MAX)),
        ],
        required: 2,
        usage: "fairness:PORTS:TOTAL[:SIZE] (PORTS 0 to 31, 0 for all; SIZE 1 to 1M)",
    },
    Workload {
        name: "tx-idle",
        args: &[
            ("SIZE", size(1, MSG_MAX)),
            ("TOTAL", size(1, ANY)),
            ("PORT", Arg::Port),
        ],
        required: 2,
        usage: "tx-idle:SIZE:TOTAL[:PORT] (SIZE 1 to 1M)",
    },
    Workload {
        name: "uart-echo",
        args: &[("BYTES", size(1, ANY))],
        required: 1,
        usage: "uart-echo:BYTES",
    },
    Workload {
        name: "exit",
        args: &[("N", size(0, u32::MAX as u64))],
        required: 1,
        usage: "exit:N",
    },
    Workload {
        name: "pio-exit",
        args: &[("N", size(0, u32::MAX as u64))],
        required: 1,
        usage: "pio-exit:N",
    },
    Workload {
        name: "svc",
        args: &[("N", size(1, 1 << 24))],
        required: 0,
        usage: "svc[:N]",
    },
    Workload {
        name: "vd-echo",
        args: &[("BYTES", size(1, ANY))],
        required: 0,
        usage: "vd-echo[:BYTES]",
    },
];

/// Why a workload word was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadError<'a> {
    /// No workload has this name.
    Unknown(&'a str),
    /// An argument the workload needs is missing, or there are too many.
    Usage(&'static str),
    /// An argument is not a number (or overflows).
    NotANumber {
        /// The argument's name.
        what: &'static str,
        /// What was given.
        value: &'a str,
        /// The workload's usage.
        usage: &'static str,
    },
    /// A number outside what the workload takes.
    OutOfRange {
        /// The argument's name.
        what: &'static str,
        /// What was given.
        value: &'a str,
        /// The workload's usage.
        usage: &'static str,
    },
}

impl fmt::Display for WorkloadError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::Unknown(name) => {
                write!(f, "no workload is named {name:?} (one of: {})", Names)
            }
            WorkloadError::Usage(usage) => write!(f, "expected {usage}"),
            WorkloadError::NotANumber { what, value, usage } => {
                write!(f, "{what} {value:?} is not a number (expected {usage})")
            }
            WorkloadError::OutOfRange { what, value, usage } => {
                write!(f, "{what} {value:?} is out of range (expected {usage})")
            }
        }
    }
}

/// Every workload's usage (`tx:SIZE:TOTAL[:PORT] (SIZE 8 to 1M)`, `hostile`, ...), in the
/// table's order: what `perimeter run --help` lists.
pub fn usages() -> impl Iterator<Item = &'static str> {
    WORKLOADS.iter().map(|w| w.usage)
}

/// Every workload's name, comma-separated.
struct Names;

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in WORKLOADS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(w.name)?;
        }
        Ok(())
    }
}

/// Reads a size: decimal or 0x hex, with an optional K, M or G (powers of 1024) suffix.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    n.checked_mul(mult)
}

/// Checks `spec` (`NAME[:ARGS]`): a known workload with the arguments it takes. An empty
/// optional argument counts as absent.
pub fn check(spec: &str) -> Result<(), WorkloadError<'_>> {
    let (name, rest) = match spec.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (spec, None),
    };
    let w = WORKLOADS
        .iter()
        .find(|w| w.name == name)
        .ok_or(WorkloadError::Unknown(name))?;
    let mut given = 0;
    if let Some(rest) = rest {
        for (i, value) in rest.split(':').enumerate() {
            let &(what, arg) = w.args.get(i).ok_or(WorkloadError::Usage(w.usage))?;
            if value.is_empty() {
                if i < w.required {
                    return Err(WorkloadError::Usage(w.usage));
                }
                continue;
            }
            given = i + 1;
            if let Arg::Size { min, max } = arg {
                let n = parse_size(value).ok_or(WorkloadError::NotANumber {
                    what,
                    value,
                    usage: w.usage,
                })?;
                if n < min || n > max {
                    return Err(WorkloadError::OutOfRange {
                        what,
                        value,
                        usage: w.usage,
                    });
                }
            }
        }
    }
    if given < w.required {
        return Err(WorkloadError::Usage(w.usage));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workloads_people_run_pass() {
        for ok in [
            "selftest",
            "echo",
            "echo:",
            "echo:4M",
            "tx:64K:256M",
            "tx:4096:8388608:port1",
            "rx:16384:4M:source",
            "pingpong:64:500:port1",
            "fairness:16:8M:4K",
            "fairness:0:1M",
            "tx-idle:64K:1M:p0",
            "exit:0",
            "exit:200",
            "svc",
            "svc:1000",
            "vd-echo:1M",
            "hostile",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn bad_words_are_refused_with_a_reason() {
        for (bad, want) in [
            ("bogus", "no workload is named \"bogus\""),
            ("tx:abc", "expected tx:SIZE:TOTAL"),
            ("tx:abc:1M", "SIZE \"abc\" is not a number"),
            ("tx:0:1M", "SIZE \"0\" is out of range"),
            ("tx:4:1M", "SIZE \"4\" is out of range"),
            ("tx:2M:1M", "SIZE \"2M\" is out of range"),
            ("tx:8:1M:p:extra", "expected tx:SIZE:TOTAL"),
            ("echo:-1", "BYTES \"-1\" is not a number"),
            ("exit:-1", "N \"-1\" is not a number"),
            ("exit", "expected exit:N"),
            ("exit:5000000000", "N \"5000000000\" is out of range"),
            ("fairness:32:1M", "PORTS \"32\" is out of range"),
            ("selftest:1", "expected selftest"),
            ("pingpong:64:0", "COUNT \"0\" is out of range"),
            ("tx-idle:64K", "expected tx-idle:SIZE:TOTAL"),
        ] {
            let e = check(bad).expect_err(bad);
            let mut s = [0u8; 512];
            let mut w = Buf(&mut s, 0);
            fmt::write(&mut w, format_args!("{e}")).unwrap();
            let text = core::str::from_utf8(&w.0[..w.1]).unwrap();
            assert!(text.contains(want), "{bad}: {text}");
        }
    }

    struct Buf<'a>(&'a mut [u8], usize);

    impl fmt::Write for Buf<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
}
