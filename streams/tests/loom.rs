//! Model checking of the perimeter core with loom: every interleaving of a few threads
//! (within loom's preemption bound) through entry and leaving, deferral and draining,
//! qwriter's upgrade, qwait's wake-up, qprocsoff's wait and the outer perimeter's
//! background writer. A lost wake-up shows as loom's deadlock report, a double entry as a
//! failed assertion.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p streams --test loom --release
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` bounds the search (default 3 here, about 5 minutes on 2 cores;
//! the outer-writer deadlock below needs 3 to show).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use streams::*;

/// A platform for the model: blocking waits on one condition variable, background work run
/// by a worker thread of the model. With `nested`, a waiter first runs one queued task on
/// its own stack, as the bare-metal guest does.
struct ModelPlatform {
    nested: bool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Platform for ModelPlatform {
    fn now(&self) -> Ticks {
        0
    }
    fn kick(&self, _sched: &dyn Scheduler) {
        let _g = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
    fn timer_deadline(&self, _sched: &dyn Scheduler, _at: Option<Ticks>) {}
    fn wait(&self, sched: &dyn Scheduler, word: &AtomicU32, expected: u32) {
        if word.load(SeqCst) != expected {
            return;
        }
        if self.nested && sched.run_one() {
            return;
        }
        let g = self.lock.lock().unwrap();
        if word.load(SeqCst) == expected {
            drop(self.cv.wait(g).unwrap());
        }
    }
    fn wake_all(&self, _word: &AtomicU32) {
        let _g = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

/// A framework instance with a worker thread that runs background work until `stop`.
struct Model {
    streams: Streams,
    platform: std::sync::Arc<ModelPlatform>,
    done: Arc<AtomicBool>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Model {
    fn new(nested: bool) -> Model {
        let platform = std::sync::Arc::new(ModelPlatform {
            nested,
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let streams = Streams::new(platform.clone(), StreamsConfig::default());
        let done = Arc::new(AtomicBool::new(false));
        let worker = {
            let (s, p, done) = (streams.clone(), platform.clone(), done.clone());
            thread::spawn(move || {
                loop {
                    if s.run_one() {
                        continue;
                    }
                    let g = p.lock.lock().unwrap();
                    if done.load(SeqCst) {
                        return;
                    }
                    if !s.has_queued_tasks() {
                        drop(p.cv.wait(g).unwrap());
                    }
                }
            })
        };
        Model {
            streams,
            platform,
            done,
            worker: Some(worker),
        }
    }

    /// Waits for background work to finish and stops the worker.
    fn stop(mut self) {
        self.streams.quiesce();
        {
            let _g = self.platform.lock.lock().unwrap();
            self.done.store(true, SeqCst);
            self.platform.cv.notify_all();
        }
        self.worker.take().unwrap().join().unwrap();
    }
}

fn msg(s: &Streams, byte: u8) -> Mblk {
    let mut mp = s.allocb(1).unwrap();
    mp.write(&[byte]).unwrap();
    mp
}

/// Counts threads inside a section and fails if two are ever inside at once.
#[derive(Clone, Default)]
struct Exclusive(Arc<AtomicUsize>);

impl Exclusive {
    fn enter(&self) -> impl Drop + '_ {
        assert_eq!(self.0.fetch_add(1, SeqCst), 0, "two threads inside");
        Guard(&self.0)
    }
}

struct Guard<'a>(&'a AtomicUsize);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// A driver whose put calls `f` for every message (exclusive inner per queue pair unless
/// `flags` say otherwise).
struct Fn<F>(F);

impl<F: core::ops::Fn(Q<'_>, Mblk) + Send + Sync + 'static> Module for Fn<F> {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        (self.0)(q, mp)
    }
}

fn driver<F>(flags: u32, f: F) -> std::sync::Arc<ModuleDef>
where
    F: core::ops::Fn(Q<'_>, Mblk) + Clone + Send + Sync + 'static,
{
    ModuleDef::builder("model")
        .flags(flags)
        .build(move || Fn(f.clone()))
        .unwrap()
}

fn model(f: impl core::ops::Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

#[test]
fn exclusive_puts_from_two_threads_never_overlap_and_none_is_lost() {
    model(|| {
        let m = Model::new(false);
        let inside = Exclusive::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let def = driver(D_MP | D_MTQPAIR, {
            let (inside, seen) = (inside.clone(), seen.clone());
            move |_q, mp| {
                let _in = inside.enter();
                seen.lock().unwrap().push(mp.data()[0]);
            }
        });
        let st = Stream::open(&m.streams, &def).unwrap();
        let wq = st.driver(Side::Write);
        let t = {
            let (wq, s) = (wq.clone(), m.streams.clone());
            thread::spawn(move || {
                wq.put(msg(&s, 1)).unwrap();
                wq.put(msg(&s, 2)).unwrap();
            })
        };
        wq.put(msg(&m.streams, 3)).unwrap();
        t.join().unwrap();
        st.close().unwrap();
        m.stop();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "delivered {seen:?}");
        let pos = |b| seen.iter().position(|&x| x == b).unwrap();
        assert!(
            pos(1) < pos(2),
            "one sender's messages out of order: {seen:?}"
        );
    });
}

/// Counters shared by a driver's entry points and a qwriter callback: plain puts and
/// service runs must never overlap the callback.
#[derive(Clone, Default)]
struct Writerish {
    plain_inside: Arc<AtomicUsize>,
    writer_inside: Arc<AtomicBool>,
    writer_runs: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl Writerish {
    /// A plain entry (put or srv): no qwriter callback may run meanwhile.
    fn plain(&self, f: impl FnOnce()) {
        self.plain_inside.fetch_add(1, SeqCst);
        assert!(
            !self.writer_inside.load(SeqCst),
            "an entry overlaps qwriter"
        );
        f();
        self.plain_inside.fetch_sub(1, SeqCst);
    }

    /// The qwriter callback: no plain entry may be inside.
    fn writer(&self) -> impl FnOnce(Q<'_>, Mblk) + Send + 'static {
        let w = self.clone();
        move |_q, _mp| {
            w.writer_inside.store(true, SeqCst);
            assert_eq!(w.plain_inside.load(SeqCst), 0, "qwriter overlaps an entry");
            w.writer_runs.fetch_add(1, SeqCst);
            w.writer_inside.store(false, SeqCst);
        }
    }
}

/// A driver whose write put queues messages for its service procedure, except byte 0xff,
/// which asks for `perim` exclusively with qwriter.
struct WriterDriver(Writerish, Perim);

impl Module for WriterDriver {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        if mp.data() == [0xff] {
            q.qwriter(mp, self.0.writer(), self.1).unwrap();
        } else {
            self.0.plain(|| q.putq(mp));
        }
    }
    fn srv(&self, q: Q<'_>) {
        self.0.plain(|| {
            while q.getq().is_some() {
                self.0.served.fetch_add(1, SeqCst);
            }
        });
    }
}

fn writer_driver(flags: u32, w: &Writerish, perim: Perim) -> std::sync::Arc<ModuleDef> {
    let w = w.clone();
    ModuleDef::builder("writer")
        .flags(flags)
        .srv(false, true)
        .build(move || WriterDriver(w.clone(), perim))
        .unwrap()
}

#[test]
fn qwriter_inner_upgrades_or_defers_and_runs_once_alone() {
    model(|| {
        let m = Model::new(false);
        let w = Writerish::default();
        let def = writer_driver(D_MP | D_MTQPAIR | D_MTPUTSHARED, &w, Perim::Inner);
        let st = Stream::open(&m.streams, &def).unwrap();
        let wq = st.driver(Side::Write);
        let t = {
            let (wq, s) = (wq.clone(), m.streams.clone());
            thread::spawn(move || wq.put(msg(&s, 1)).unwrap())
        };
        wq.put(msg(&m.streams, 0xff)).unwrap();
        t.join().unwrap();
        m.streams.quiesce();
        assert_eq!(w.writer_runs.load(SeqCst), 1);
        assert_eq!(w.served.load(SeqCst), 1);
        st.close().unwrap();
        m.stop();
    });
}

/// Two instances of a D_MTOUTPERIM driver: one calls qwriter(PERIM_OUTER) while a put and
/// the service it schedules run in the other; the writer runs once, alone, and nothing
/// waits forever, whether a blocked thread runs other work on its stack (`nested`, the
/// guest's platform) or not (the host's).
fn outer_writer_against_a_busy_instance(nested: bool) {
    model(move || {
        let m = Model::new(nested);
        let w = Writerish::default();
        let def = writer_driver(D_MP | D_MTQPAIR | D_MTOUTPERIM, &w, Perim::Outer);
        let one = Stream::open(&m.streams, &def).unwrap();
        let two = Stream::open(&m.streams, &def).unwrap();
        let t = {
            let (wq, s) = (two.driver(Side::Write), m.streams.clone());
            thread::spawn(move || wq.put(msg(&s, 1)).unwrap())
        };
        one.driver(Side::Write).put(msg(&m.streams, 0xff)).unwrap();
        t.join().unwrap();
        m.streams.quiesce();
        assert_eq!(w.writer_runs.load(SeqCst), 1);
        assert_eq!(w.served.load(SeqCst), 1);
        one.close().unwrap();
        two.close().unwrap();
        m.stop();
    });
}

#[test]
fn outer_writer_against_a_busy_instance_host_platform() {
    outer_writer_against_a_busy_instance(false);
}

#[test]
fn outer_writer_against_a_busy_instance_nested_platform() {
    outer_writer_against_a_busy_instance(true);
}

/// An open that qwaits until its put has run.
struct Waiter {
    ready: Arc<AtomicBool>,
    slot: Arc<Mutex<Option<QueueRef>>>,
}

impl Module for Waiter {
    fn open(&self, q: Q<'_>, _how: OpenHow) -> Result<(), Errno> {
        q.qprocson().map_err(|_| Errno::EINVAL)?;
        *self.slot.lock().unwrap() = Some(q.to_ref());
        while !self.ready.load(SeqCst) {
            q.qwait().unwrap();
        }
        Ok(())
    }
    fn put(&self, _q: Q<'_>, _mp: Mblk) {
        self.ready.store(true, SeqCst);
    }
}

#[test]
fn qwait_in_open_wakes_for_a_put_from_another_thread() {
    model(|| {
        let m = Model::new(false);
        let ready = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(None::<QueueRef>));
        let def = {
            let (ready, slot) = (ready.clone(), slot.clone());
            ModuleDef::builder("waiter")
                .flags(D_MP | D_MTQPAIR)
                .build(move || Waiter {
                    ready: ready.clone(),
                    slot: slot.clone(),
                })
                .unwrap()
        };
        let t = {
            let (slot, s) = (slot.clone(), m.streams.clone());
            thread::spawn(move || {
                let q = loop {
                    if let Some(q) = slot.lock().unwrap().clone() {
                        break q;
                    }
                    thread::yield_now();
                };
                q.put(msg(&s, 1)).unwrap();
            })
        };
        let st = Stream::open(&m.streams, &def).unwrap();
        t.join().unwrap();
        assert!(ready.load(SeqCst));
        slot.lock().unwrap().take(); // the instance holds the slot: no cycle
        st.close().unwrap();
        m.stop();
    });
}

/// A driver whose close records that qprocsoff returned; a put after that is a failure.
struct Closer {
    closed: Arc<AtomicBool>,
    delivered: Arc<AtomicUsize>,
}

impl Module for Closer {
    fn close(&self, q: Q<'_>) {
        q.qprocsoff().unwrap();
        self.closed.store(true, SeqCst);
    }
    fn put(&self, _q: Q<'_>, _mp: Mblk) {
        assert!(!self.closed.load(SeqCst), "a put after qprocsoff");
        self.delivered.fetch_add(1, SeqCst);
    }
}

#[test]
fn qprocsoff_waits_for_a_put_in_progress_and_none_follows_it() {
    model(|| {
        let m = Model::new(false);
        let closed = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicUsize::new(0));
        let def = {
            let (closed, delivered) = (closed.clone(), delivered.clone());
            ModuleDef::builder("closer")
                .flags(D_MP | D_MTQPAIR)
                .build(move || Closer {
                    closed: closed.clone(),
                    delivered: delivered.clone(),
                })
                .unwrap()
        };
        let st = Stream::open(&m.streams, &def).unwrap();
        let t = {
            let (wq, s) = (st.driver(Side::Write), m.streams.clone());
            thread::spawn(move || wq.put(msg(&s, 1)).is_ok())
        };
        st.close().unwrap();
        let accepted = t.join().unwrap();
        assert!(closed.load(SeqCst));
        assert!(delivered.load(SeqCst) <= usize::from(accepted));
        m.stop();
    });
}

/// A D_MTOCEXCL open (which takes the outer perimeter exclusively and waits for every
/// instance to empty) while a put and the service it queued run in another instance.
fn exclusive_open_against_a_busy_instance(nested: bool) {
    model(move || {
        let m = Model::new(nested);
        let w = Writerish::default();
        let def = writer_driver(
            D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL,
            &w,
            Perim::Outer,
        );
        let one = Stream::open(&m.streams, &def).unwrap();
        let t = {
            let (wq, s) = (one.driver(Side::Write), m.streams.clone());
            thread::spawn(move || wq.put(msg(&s, 1)).unwrap())
        };
        let two = Stream::open(&m.streams, &def).unwrap();
        t.join().unwrap();
        m.streams.quiesce();
        assert_eq!(w.served.load(SeqCst), 1);
        one.close().unwrap();
        two.close().unwrap();
        m.stop();
    });
}

#[test]
fn exclusive_open_against_a_busy_instance_host_platform() {
    exclusive_open_against_a_busy_instance(false);
}

#[test]
fn exclusive_open_against_a_busy_instance_nested_platform() {
    exclusive_open_against_a_busy_instance(true);
}
