//! Criterion benchmarks of the virtio-console device model alone (no KVM): a fake guest driver
//! keeps a split virtqueue full of buffers while the device moves them to or from a backend
//! running in host threads, beside a `memcpy` of the same bytes in the same group.
//!
//! * `console-tx/SIZE`: guest → host. The guest posts SIZE-byte buffers on port 0's transmitq;
//!   the device wraps each one as a message without copying (esballoc over guest memory), the
//!   `null` backend takes it at the stream head, and freeing it completes the descriptor.
//! * `console-rx/SIZE`: host → guest. The `pattern` backend writes into the stream; the device
//!   copies into SIZE-byte buffers posted on port 0's receiveq.
//! * `memcpy/SIZE`: copying the same number of bytes in SIZE-byte pieces.
//!
//! Figures and the command that makes them: BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use device_model::console::ConsoleRuntime;
use device_model::console::backend::PortSpec;
use device_model::console::defs::{rx_queue, tx_queue};
use device_model::testing::FakeGuest;
use device_model::virtio::features::{EVENT_IDX, VERSION_1};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [64, 4096, 65536];
/// Descriptors the guest keeps posted (the queue's size).
const RING: usize = 256;

/// Buffers moved per timed iteration: about 4 MiB, at least a full ring.
fn per_iter(size: usize) -> usize {
    ((4 << 20) / size).clamp(RING, 16384)
}

/// A guest and a running console whose port 0 has `backend` (single port, EVENT_IDX).
struct Bench {
    g: FakeGuest,
    rt: ConsoleRuntime,
    slots: Vec<u64>,
    free: Vec<usize>,
    posted: HashMap<u16, usize>,
}

impl Bench {
    fn new(backend: &str, size: usize, write: bool) -> Bench {
        let spec = PortSpec::parse(&format!("name=bench,backend={backend}")).unwrap();
        let rt = ConsoleRuntime::start(&[spec], &[]).unwrap();
        let h = rt.handle();
        let mut g = FakeGuest::new(
            rt.device(),
            RING * size + (8 << 20),
            Box::new(move |q| h.queue_notified(q)),
        );
        assert!(g.negotiate(VERSION_1 | EVENT_IDX));
        g.start(2);
        let slots: Vec<u64> = (0..RING).map(|_| g.alloc(size as u64)).collect();
        if !write {
            for &a in &slots {
                g.write(a, &vec![0x5a; size]);
            }
        }
        Bench {
            g,
            rt,
            free: (0..RING).collect(),
            slots,
            posted: HashMap::new(),
        }
    }

    /// Keeps queue `q` full of `size`-byte buffers until `n` have been used; returns the
    /// bytes the device reported (written for receive buffers).
    fn pump(&mut self, q: u16, size: usize, write: bool, n: usize) -> u64 {
        let (mut done, mut bytes, mut idle) = (0, 0u64, 0u32);
        while done < n {
            let mut posted = false;
            while let Some(slot) = self.free.pop() {
                let head = self
                    .g
                    .post(q, &[(self.slots[slot], size as u32, write)], false)
                    .expect("a descriptor per slot");
                self.posted.insert(head, slot);
                posted = true;
            }
            if posted {
                self.g.kick(q);
            }
            let used = self.g.used(q);
            if used.is_empty() {
                // A real guest halts until the interrupt; sleeping leaves the two cores to
                // the device's threads as halting would.
                idle += 1;
                if idle > 16 {
                    std::thread::sleep(Duration::from_micros(20));
                }
                continue;
            }
            idle = 0;
            for (head, len) in used {
                self.free
                    .push(self.posted.remove(&head).expect("a posted head"));
                bytes += u64::from(len);
                done += 1;
            }
        }
        bytes
    }
}

fn memcpy(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    size: usize,
) {
    let n = per_iter(size);
    // Source and destination as the device sees them: a ring's worth of buffers each. The
    // destination is offset by a cache line so that the copy does not run into 4 KiB
    // aliasing of equal page offsets (which halves it here).
    let src = vec![0xa5u8; RING * size];
    let mut dst = vec![0u8; RING * size + 64];
    group.bench_function(BenchmarkId::new("memcpy", size), |b| {
        b.iter(|| {
            for i in 0..n {
                let at = (i % RING) * size;
                dst[at + 64..at + 64 + size].copy_from_slice(black_box(&src[at..at + size]));
            }
            black_box(&dst);
        })
    });
}

fn console(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("console/{size}B"));
        group
            .throughput(Throughput::Bytes((per_iter(size) * size) as u64))
            .measurement_time(Duration::from_secs(5))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);
        memcpy(&mut group, size);

        let mut tx = Bench::new("null", size, false);
        group.bench_function(BenchmarkId::new("tx", size), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    tx.pump(tx_queue(0), size, false, per_iter(size));
                }
                t.elapsed()
            })
        });
        let st = tx.rt.stats();
        assert_eq!(st.ports[0].drops, 0);
        drop(tx.rt.finish(Duration::from_secs(2)));

        let mut rx = Bench::new("pattern", size, true);
        group.bench_function(BenchmarkId::new("rx", size), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    // Receive buffers may come back partly filled: count bytes, not buffers.
                    let want = (per_iter(size) * size) as u64;
                    let mut got = 0;
                    while got < want {
                        got += rx.pump(rx_queue(0), size, true, RING.min(per_iter(size)));
                    }
                }
                t.elapsed()
            })
        });
        drop(rx.rt.finish(Duration::from_secs(2)));
        group.finish();
    }
}

criterion_group!(benches, console);
criterion_main!(benches);
