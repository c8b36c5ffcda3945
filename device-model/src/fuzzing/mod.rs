//! Fuzz harnesses: each reads arbitrary bytes as a program for a hostile guest (or a careless
//! module author) and runs it against the device model on a deterministic platform. Whatever
//! the bytes, nothing may panic, hang or lose track of memory; `messages` also checks every
//! result against a plain model. The cargo-fuzz targets in `fuzz/` call these; the unit test
//! below replays the committed seed corpus (`fuzz/corpus/TARGET/`) in every `cargo test`.

mod control;
mod messages;
mod mmio;
mod packed;
mod rings;

pub use control::control;
pub use messages::messages;
pub use mmio::mmio;
pub use packed::packed;
pub use rings::rings;

use crate::console::{Console, ConsoleHandle, PortConfig};
use crate::testing::FakeGuest;
use std::sync::{Arc, Mutex, MutexGuard};
use streams::{DetPlatform, ReadResult, Streams, StreamsConfig};
use vm_memory::{Bytes, GuestAddress};

/// A harness: runs one input.
pub type Harness = fn(&[u8]);

/// Every harness by name, as the fuzz targets and the corpus directories are named.
pub const TARGETS: [(&str, Harness); 5] = [
    ("mmio", mmio),
    ("rings", rings),
    ("control", control),
    ("messages", messages),
    ("packed", packed),
];

/// Guest memory of the rigs: queues at 1 MiB (16 KiB each), buffers from 2 MiB.
const MEM: usize = 4 << 20;

/// Most operations one input runs (keeps every run short).
const MAX_OPS: usize = 512;

/// Arbitrary bytes read front to back; reads past the end give zeros.
pub struct Input<'a> {
    data: &'a [u8],
    ops: usize,
}

impl<'a> Input<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, ops: 0 }
    }

    /// The next operation code, or `None` when the input (or the operation budget) ends.
    pub fn op(&mut self) -> Option<u8> {
        self.ops += 1;
        (self.ops <= MAX_OPS && !self.data.is_empty()).then(|| self.u8())
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A length byte, then up to `max` bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (usize::from(self.u8()) % (max + 1)).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
}

/// A console with three ports (a console port and two plain ones) on a deterministic
/// platform, driven by a fake guest through its transport.
struct Rig {
    g: FakeGuest,
    h: ConsoleHandle,
    s: Streams,
    console: Arc<Mutex<Console>>,
}

const PORTS: u32 = 3;

impl Rig {
    fn new() -> Rig {
        let s = Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default());
        let ports = (0..PORTS)
            .map(|i| {
                let config = PortConfig {
                    name: format!("p{i}"),
                    console: i == 0,
                    plugged: true,
                };
                (config, Vec::new())
            })
            .collect();
        let c = Console::new(&s, ports).expect("a console of three ports");
        let h = c.handle();
        // Reproducible: every piece of work runs in this thread (no poller at work).
        h.set_tx_poll(std::time::Duration::ZERO);
        let console = Arc::new(Mutex::new(c));
        let h2 = h.clone();
        let g = FakeGuest::new(
            console.clone(),
            MEM,
            Box::new(move |q| h2.queue_notified(q)),
        );
        Rig { g, h, s, console }
    }

    fn console(&self) -> MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes guest memory; out-of-range writes are dropped (the guest could not make them).
    fn poke(&self, addr: u64, bytes: &[u8]) {
        let _ = self.g.mem.write_slice(bytes, GuestAddress(addr));
    }

    /// What the event loop does for the queue-notify eventfds that fired.
    fn deliver_notifications(&self) {
        for (i, fd) in self.g.transport.queue_events().iter().enumerate() {
            if fd.read().is_ok() {
                self.h.queue_notified(i as u16);
            }
        }
    }

    /// The host side writes to port `port` (what its backend would).
    fn host_write(&self, port: u32, bytes: &[u8]) {
        if let Some(st) = self.console().stream(port % PORTS) {
            let _ = st.write(bytes);
        }
    }

    /// The host side reads everything port `port` holds.
    fn host_drain(&self, port: u32) {
        if let Some(st) = self.console().stream(port % PORTS).cloned() {
            while let ReadResult::Data(_) = st.read() {}
        }
    }

    /// Runs all background work and checks the counters the host reports.
    fn settle(&self) {
        self.deliver_notifications();
        self.s.run_until_idle();
        let _ = self.h.stats(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    #[test]
    fn every_seed_of_the_committed_corpus_runs_clean() {
        for (name, harness) in TARGETS {
            let seeds = corpus(name);
            assert!(seeds.len() >= 4, "{name}: only {} seeds", seeds.len());
            for (path, bytes) in seeds {
                eprintln!("{}", path.display());
                harness(&bytes);
            }
        }
    }

    #[test]
    fn input_reads_past_the_end_as_zeros() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0201);
        assert_eq!(i.u32(), 3);
        assert_eq!(i.bytes(8), b"");
        assert_eq!(i.op(), None);
    }
}
