//! Criterion benchmarks of the STREAMS core, each group with the baselines a user would
//! reach for instead. Figures and the command that makes them: BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use streams::*;

fn det() -> Streams {
    Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default())
}

/// A module that passes every message on.
struct Pass;
impl Module for Pass {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        q.putnext(mp)
    }
}

/// A driver that frees what it receives and counts it.
struct Sink(Arc<AtomicUsize>);
impl Module for Sink {
    fn put(&self, _q: Q<'_>, mp: Mblk) {
        self.0.fetch_add(1, Ordering::Relaxed);
        drop(mp);
    }
}

fn sink(flags: u32, count: &Arc<AtomicUsize>) -> Arc<ModuleDef> {
    let c = count.clone();
    ModuleDef::builder("sink")
        .flags(flags)
        .build(move || Sink(c.clone()))
        .unwrap()
}

fn allocb(c: &mut Criterion) {
    let s = det();
    let mut g = c.benchmark_group("allocb");
    g.bench_function("allocb+freeb 64B", |b| {
        b.iter(|| drop(black_box(s.allocb(black_box(64)))))
    });
    g.bench_function("baseline Box<[u8]> 64B", |b| {
        b.iter(|| drop(black_box(vec![0u8; black_box(64)].into_boxed_slice())))
    });
    g.finish();
}

type Chan = (
    crossbeam_channel::Sender<Mblk>,
    crossbeam_channel::Receiver<Mblk>,
);

/// One thread per pipeline stage, forwarding from channel i to channel i + 1 until the
/// senders are gone.
fn spawn_stages<'s>(t: &'s std::thread::Scope<'s, '_>, chans: &[Chan]) {
    for pair in chans.windows(2) {
        let (rx, tx) = (pair[0].1.clone(), pair[1].0.clone());
        t.spawn(move || {
            for m in rx {
                tx.send(m).unwrap();
            }
        });
    }
}

/// A message through N modules: per message, allocb + head + N modules + driver.
fn hops(c: &mut Criterion) {
    let mut g = c.benchmark_group("hop");
    for depth in [1usize, 4, 8] {
        for (name, flags) in [
            ("D_MP", D_MP),
            ("D_MTQPAIR", D_MP | D_MTQPAIR),
            ("D_MTPERMOD", D_MP | D_MTPERMOD),
        ] {
            let s = det();
            let count = Arc::new(AtomicUsize::new(0));
            let st = Stream::open(&s, &sink(flags, &count)).unwrap();
            let m = ModuleDef::builder("pass")
                .flags(flags)
                .build(|| Pass)
                .unwrap();
            for _ in 0..depth {
                st.push(&m).unwrap();
            }
            g.bench_with_input(BenchmarkId::new(name, depth), &depth, |b, _| {
                b.iter(|| st.putmsg(s.allocb(64).unwrap()).unwrap())
            });
        }
        // Baseline: the same depth (head + modules + driver) as dynamic function calls.
        let s = det();
        let chain: Vec<Box<dyn Fn(Mblk) -> Mblk>> = (0..depth + 2)
            .map(|_| Box::new(black_box) as Box<dyn Fn(Mblk) -> Mblk>)
            .collect();
        g.bench_with_input(
            BenchmarkId::new("baseline fn-chain", depth),
            &depth,
            |b, _| {
                b.iter(|| {
                    let mut m = s.allocb(64).unwrap();
                    for stage in &chain {
                        m = stage(m);
                    }
                    drop(m)
                })
            },
        );
        // Baseline: a crossbeam-channel pipeline of the same depth, each hop a send and a
        // receive (in one thread: the channel's own cost, no thread hand-off).
        let chans: Vec<_> = (0..depth + 2)
            .map(|_| crossbeam_channel::bounded::<Mblk>(1))
            .collect();
        g.bench_with_input(
            BenchmarkId::new("baseline crossbeam", depth),
            &depth,
            |b, _| {
                b.iter(|| {
                    let mut m = s.allocb(64).unwrap();
                    for (tx, rx) in &chans {
                        tx.send(m).unwrap();
                        m = rx.recv().unwrap();
                    }
                    drop(m)
                })
            },
        );
        // Baseline: the same pipeline with a thread per stage (what "a pipeline" usually
        // means): per message, through `depth` stage threads to a consumer.
        g.bench_with_input(
            BenchmarkId::new("baseline crossbeam threads", depth),
            &depth,
            |b, _| {
                b.iter_custom(|iters| {
                    let chans: Vec<_> = (0..depth + 1)
                        .map(|_| crossbeam_channel::bounded::<Mblk>(64))
                        .collect();
                    let start = Instant::now();
                    std::thread::scope(|t| {
                        spawn_stages(t, &chans);
                        let last = chans[depth].1.clone();
                        t.spawn(move || {
                            for _ in 0..iters {
                                drop(last.recv().unwrap());
                            }
                        });
                        let first = chans[0].0.clone();
                        drop(chans);
                        for _ in 0..iters {
                            first.send(s.allocb(64).unwrap()).unwrap();
                        }
                    });
                    start.elapsed()
                })
            },
        );
        // The same threaded pipeline, one message at a time (latency: every hop wakes a thread).
        let chans: Vec<_> = (0..depth + 1)
            .map(|_| crossbeam_channel::bounded::<Mblk>(1))
            .collect();
        std::thread::scope(|t| {
            spawn_stages(t, &chans);
            let (first, last) = (chans[0].0.clone(), chans[depth].1.clone());
            drop(chans);
            g.bench_with_input(
                BenchmarkId::new("baseline crossbeam threads latency", depth),
                &depth,
                |b, _| {
                    b.iter(|| {
                        first.send(s.allocb(64).unwrap()).unwrap();
                        drop(last.recv().unwrap());
                    })
                },
            );
            drop(first);
        });
    }
    g.finish();
}

/// putq from put, getq in srv: a batch of 64 messages, then the service procedure.
fn putq_getq(c: &mut Criterion) {
    struct Queueing;
    impl Module for Queueing {
        fn put(&self, q: Q<'_>, mp: Mblk) {
            q.putq(mp)
        }
        fn srv(&self, q: Q<'_>) {
            while let Some(m) = q.getq() {
                drop(m)
            }
        }
    }
    let s = det();
    let d = ModuleDef::builder("queueing")
        .srv(false, true)
        .info(ModuleInfo {
            hiwat: 1 << 20,
            lowat: 1 << 10,
            ..Default::default()
        })
        .build(|| Queueing)
        .unwrap();
    let st = Stream::open(&s, &d).unwrap();
    let wq = st.driver(Side::Write);
    let mut g = c.benchmark_group("putq-getq");
    g.bench_function("64 messages via srv", |b| {
        b.iter(|| {
            for _ in 0..64 {
                wq.put(s.allocb(64).unwrap()).unwrap();
            }
            s.run_until_idle();
        })
    });
    g.finish();
}

/// qwriter(PERIM_INNER) on the immediate path (the only claim) and the deferred one (a
/// second shared claim: a nested put of the same PUTSHARED module).
fn qwriter(c: &mut Criterion) {
    struct Writer(Arc<AtomicUsize>);
    impl Module for Writer {
        fn put(&self, q: Q<'_>, mp: Mblk) {
            if mp.data().first() == Some(&1) {
                // Nested put: a second claim, so the qwriter below must be deferred.
                let mut inner = mp;
                inner.data_mut().unwrap()[0] = 0;
                q.put(inner).unwrap();
                return;
            }
            let n = self.0.clone();
            let _ = q.qwriter(
                mp,
                move |_q, _m| {
                    n.fetch_add(1, Ordering::Relaxed);
                },
                Perim::Inner,
            );
        }
    }
    let s = det();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let d = ModuleDef::builder("writer")
        .flags(D_MP | D_MTQPAIR | D_MTPUTSHARED)
        .build(move || Writer(n2.clone()))
        .unwrap();
    let st = Stream::open(&s, &d).unwrap();
    let wq = st.driver(Side::Write);
    let msg = |first: u8| {
        let mut m = s.allocb(1).unwrap();
        m.write(&[first]).unwrap();
        m
    };
    let mut g = c.benchmark_group("qwriter");
    g.bench_function("immediate", |b| b.iter(|| wq.put(msg(0)).unwrap()));
    g.bench_function("deferred (nested put + qwriter)", |b| {
        b.iter(|| wq.put(msg(1)).unwrap())
    });
    g.bench_function("baseline nested put only", |b| {
        b.iter(|| {
            let mut m = msg(2);
            m.set_band(0);
            wq.put(m).unwrap()
        })
    });
    g.finish();
    assert!(n.load(Ordering::Relaxed) > 0);
}

/// Two threads putting into one D_MTQPAIR module (host platform).
fn contended(c: &mut Criterion) {
    let s = HostPlatform::streams(StreamsConfig::default());
    let count = Arc::new(AtomicUsize::new(0));
    let st = Stream::open(&s, &sink(D_MP | D_MTQPAIR, &count)).unwrap();
    let wq = st.driver(Side::Write);
    let mut g = c.benchmark_group("contended");
    g.bench_function("2 threads put into one D_MTQPAIR driver", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|t| {
                for _ in 0..2 {
                    let (wq, s) = (&wq, &s);
                    t.spawn(move || {
                        for _ in 0..iters.div_ceil(2) {
                            wq.put(s.allocb(64).unwrap()).unwrap();
                        }
                    });
                }
            });
            s.quiesce();
            start.elapsed()
        })
    });
    let (tx, rx) = crossbeam_channel::bounded::<Mblk>(1024);
    g.bench_function("baseline 2 threads send into one crossbeam consumer", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|t| {
                for _ in 0..2 {
                    let (tx, s) = (tx.clone(), &s);
                    t.spawn(move || {
                        for _ in 0..iters.div_ceil(2) {
                            tx.send(s.allocb(64).unwrap()).unwrap();
                        }
                    });
                }
                let rx = &rx;
                t.spawn(move || {
                    for _ in 0..iters.div_ceil(2) * 2 {
                        drop(rx.recv().unwrap());
                    }
                });
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = allocb, hops, putq_getq, qwriter, contended
}
criterion_main!(benches);
