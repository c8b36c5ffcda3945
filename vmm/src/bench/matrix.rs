//! The benchmark matrix: which guest workload each cell runs, and what the host side of each
//! port does. Port 0 is always a console port named `console`; data ports are `port1`...

use super::peer::Role;
use std::fmt;
use std::time::Duration;

/// What a cell measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Process start to the guest's first byte of output, and to its exit.
    Boot,
    /// Guest to host, one port, the host checks the CRC.
    Tx,
    /// Host pattern to guest, one port, the guest checks every byte.
    Rx,
    /// Round trips through a host echo.
    Pingpong,
    /// Guest to host on several ports at once (aggregate throughput).
    Fairness,
    /// Guest to host on the console port while the host reads slowly.
    ConsoleSlowReader,
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cell {
    /// What it measures.
    pub kind: Kind,
    /// Message (and receive buffer) size in bytes.
    pub size: usize,
    /// Data ports in use.
    pub ports: usize,
    /// Bytes per port (round trips for pingpong).
    pub amount: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Message sizes of the throughput and latency cells.
pub const SIZES: [usize; 3] = [64, 4096, 65536];

impl Cell {
    /// The guest's `workload=` argument.
    pub fn workload(&self) -> String {
        let (size, amount) = (self.size, self.amount);
        match self.kind {
            Kind::Boot => "hello".into(),
            Kind::Tx => format!("tx:{size}:{amount}:port1"),
            Kind::Rx => format!("rx:{size}:{amount}:port1"),
            Kind::Pingpong => format!("pingpong:{size}:{amount}:port1"),
            Kind::Fairness => format!("fairness:{}:{amount}:{size}", self.ports),
            Kind::ConsoleSlowReader => format!("tx:{size}:{amount}:console"),
        }
    }

    /// The host side of port 0 (the console) and of each data port.
    pub fn roles(&self) -> Vec<Role> {
        let console = match self.kind {
            Kind::ConsoleSlowReader => Role::SlowSink {
                chunk: 64 * KIB as usize,
                pause: Duration::from_millis(2),
            },
            _ => Role::Sink,
        };
        let data = match self.kind {
            Kind::Rx => Role::Source,
            Kind::Pingpong => Role::Echo,
            _ => Role::Sink,
        };
        std::iter::once(console)
            .chain(std::iter::repeat_n(data, self.ports))
            .collect()
    }

    /// Whether the cell reports a throughput (else a latency or a boot time).
    pub fn is_throughput(&self) -> bool {
        !matches!(self.kind, Kind::Boot | Kind::Pingpong)
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = human_size(self.size as u64);
        match self.kind {
            Kind::Boot => write!(f, "boot"),
            Kind::Tx => write!(f, "tx {size}"),
            Kind::Rx => write!(f, "rx {size}"),
            Kind::Pingpong => write!(f, "pingpong {size}"),
            Kind::Fairness => write!(f, "tx {size} x{} ports", self.ports),
            Kind::ConsoleSlowReader => write!(f, "console tx {size}, slow reader"),
        }
    }
}

/// `64 B`, `4 KiB`, `64 KiB`, `1 MiB`.
pub fn human_size(n: u64) -> String {
    match n {
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} B"),
    }
}

/// The matrix: boot; tx, rx and pingpong at each size on one port; tx on 4 and 16 ports at
/// once; the console port under a slow reader. `quick` moves about a sixteenth of the data.
pub fn matrix(quick: bool) -> Vec<Cell> {
    let scale = if quick { 16 } else { 1 };
    let bytes = |size: usize| {
        (match size {
            64 => 4 * MIB,
            4096 => 128 * MIB,
            _ => 512 * MIB,
        }) / scale
    };
    let trips = |size: usize| {
        (match size {
            64 => 2000,
            4096 => 1000,
            _ => 500,
        }) / scale.min(4)
    };
    let cell = |kind, size, ports, amount| Cell {
        kind,
        size,
        ports,
        amount,
    };
    let mut cells = vec![cell(Kind::Boot, 0, 1, 0)];
    for kind in [Kind::Tx, Kind::Rx] {
        cells.extend(SIZES.map(|s| cell(kind, s, 1, bytes(s))));
    }
    cells.extend(SIZES.map(|s| cell(Kind::Pingpong, s, 1, trips(s))));
    for ports in [4, 16] {
        cells.extend(SIZES.map(|s| cell(Kind::Fairness, s, ports, bytes(s) / ports as u64)));
    }
    cells.push(cell(Kind::ConsoleSlowReader, 4096, 0, 8 * MIB / scale));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_has_a_console_role_first_and_one_role_per_data_port() {
        for c in matrix(false) {
            let roles = c.roles();
            assert_eq!(roles.len(), 1 + c.ports, "{c}");
            let expect_console_slow = c.kind == Kind::ConsoleSlowReader;
            assert_eq!(
                matches!(roles[0], Role::SlowSink { .. }),
                expect_console_slow,
                "{c}"
            );
        }
    }

    #[test]
    fn workloads_name_the_ports_the_roles_serve() {
        let m = matrix(true);
        let find =
            |k: Kind, size: usize| *m.iter().find(|c| c.kind == k && c.size == size).unwrap();
        assert_eq!(find(Kind::Tx, 4096).workload(), "tx:4096:8388608:port1");
        assert_eq!(find(Kind::Pingpong, 64).workload(), "pingpong:64:500:port1");
        assert_eq!(find(Kind::Rx, 64).roles()[1], Role::Source);
        assert_eq!(
            find(Kind::ConsoleSlowReader, 4096).workload(),
            "tx:4096:524288:console"
        );
        assert!(m.iter().any(|c| c.kind == Kind::Fairness && c.ports == 16));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(64), "64 B");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(65536), "64 KiB");
        assert_eq!(human_size(8 * MIB), "8 MiB");
    }
}
