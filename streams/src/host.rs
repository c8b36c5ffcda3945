//! The host platform: worker threads for background work, a timer thread, and blocking
//! waits on a small table of condition variables (a user-space futex).

use crate::platform::{Platform, Scheduler, Ticks};
use crate::sched::Streams;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

const BUCKETS: usize = 64;

std::thread_local! {
    /// Set inside [`HostPlatform::run_inline`]: this thread runs what it queues.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}
/// What every worker and timer thread runs first (see [`set_thread_start`]).
static THREAD_START: Mutex<Option<fn()>> = Mutex::new(None);

/// Sets what every worker and timer thread started from now on runs first, in that thread
/// (as tokio's `on_thread_start`): an embedder places the threads it did not start itself,
/// whichever of its threads happened to start them. None: nothing.
pub fn set_thread_start(hook: Option<fn()>) {
    *lock(&THREAD_START) = hook;
}

fn thread_started() {
    let hook = *lock(&THREAD_START);
    if let Some(hook) = hook {
        hook();
    }
}

/// Most worker threads; blocking entries can park workers, so the pool grows on demand.
const MAX_WORKERS: usize = 64;

#[derive(Default)]
struct Workers {
    threads: usize,
    idle: usize,
    pending: u64,
    deadline: Option<Ticks>,
    timer_thread: bool,
}

struct Shared {
    start: Instant,
    workers: Mutex<Workers>,
    work_cv: Condvar,
    timer_cv: Condvar,
    buckets: Vec<(Mutex<()>, Condvar)>,
}

/// The platform for host processes: worker threads started on demand, a timer thread,
/// and 1 tick = 1 ms. Threads end on their own once their [`Streams`] is dropped.
#[derive(Clone)]
pub struct HostPlatform(Arc<Shared>);

impl Default for HostPlatform {
    fn default() -> Self {
        HostPlatform(Arc::new(Shared {
            start: Instant::now(),
            workers: Mutex::new(Workers::default()),
            work_cv: Condvar::new(),
            timer_cv: Condvar::new(),
            buckets: (0..BUCKETS)
                .map(|_| (Mutex::new(()), Condvar::new()))
                .collect(),
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HostPlatform {
    /// A host platform; threads start when work first arrives.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new [`Streams`] on a new host platform.
    pub fn streams(config: crate::StreamsConfig) -> Streams {
        Streams::new(Arc::new(HostPlatform::new()), config)
    }

    /// Runs `f`, then runs the background work it queued (service procedures enabled by its
    /// puts, callbacks) in this thread instead of waking a worker for it: for threads that
    /// queue work and are free to run it at once, such as an event loop relaying a device
    /// notification or a backend thread after a write. Saves a thread hand-off per message.
    /// Work that others queued meanwhile may run here too; a blocking wait inside `f` still
    /// hands queued work to the workers.
    pub fn run_inline<R>(streams: &Streams, f: impl FnOnce() -> R) -> R {
        /// Clears the flag even if `f` panics.
        struct Outermost;
        impl Drop for Outermost {
            fn drop(&mut self) {
                INLINE.with(|i| i.set(false));
            }
        }
        if INLINE.with(|i| i.replace(true)) {
            return f(); // an outer run_inline runs the work
        }
        let r = {
            let _g = Outermost;
            f()
        };
        streams.run_pending();
        r
    }

    /// Wakes an idle worker for queued work, or starts one.
    fn wake_worker(&self, sched: &dyn Scheduler) {
        let mut w = lock(&self.0.workers);
        w.pending += 1;
        if w.idle > 0 {
            self.0.work_cv.notify_one();
        } else if w.threads < MAX_WORKERS {
            w.threads += 1;
            let (shared, weak) = (self.0.clone(), sched.downgrade());
            std::thread::Builder::new()
                .name("streams-worker".into())
                .spawn(move || {
                    thread_started();
                    let run = std::panic::AssertUnwindSafe(|| shared.worker(weak));
                    if std::panic::catch_unwind(run).is_err() {
                        // A routine panicked inside a perimeter it can never leave now: every
                        // later entry would hang. Fail loudly instead.
                        use std::io::Write;
                        let _ = writeln!(
                            std::io::stderr(),
                            "streams: a module routine panicked in a worker thread; aborting"
                        );
                        std::process::abort();
                    }
                    lock(&shared.workers).threads -= 1;
                })
                .expect("spawn a STREAMS worker thread");
        }
    }
}

impl Shared {
    fn now(&self) -> Ticks {
        self.start.elapsed().as_millis() as Ticks
    }

    fn bucket(&self, word: &AtomicU32) -> &(Mutex<()>, Condvar) {
        &self.buckets[(word as *const AtomicU32 as usize >> 2) % BUCKETS]
    }

    fn worker(&self, weak: Weak<dyn Scheduler>) {
        loop {
            let Some(s) = weak.upgrade() else { return };
            s.run_pending();
            drop(s);
            let mut w = lock(&self.workers);
            if w.pending > 0 {
                w.pending = 0;
                continue;
            }
            w.idle += 1;
            let (mut w, _) = self
                .work_cv
                .wait_timeout(w, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner());
            w.idle -= 1;
            w.pending = 0;
        }
    }

    fn timer(&self, weak: Weak<dyn Scheduler>) {
        let mut w = lock(&self.workers);
        loop {
            let now = self.now();
            match w.deadline {
                Some(d) if d <= now => {
                    w.deadline = None;
                    drop(w);
                    let Some(s) = weak.upgrade() else { return };
                    s.run_timers();
                    drop(s);
                    w = lock(&self.workers);
                }
                Some(d) => {
                    w = self
                        .timer_cv
                        .wait_timeout(w, Duration::from_millis(d - now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    let (g, t) = self
                        .timer_cv
                        .wait_timeout(w, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner());
                    w = g;
                    if t.timed_out() && weak.upgrade().is_none() {
                        return;
                    }
                }
            }
        }
    }
}

impl Platform for HostPlatform {
    fn now(&self) -> Ticks {
        self.0.now()
    }
    fn kick(&self, sched: &dyn Scheduler) {
        if INLINE.with(Cell::get) {
            return; // run_inline runs it when `f` returns
        }
        self.wake_worker(sched);
    }
    fn timer_deadline(&self, sched: &dyn Scheduler, at: Option<Ticks>) {
        let mut w = lock(&self.0.workers);
        w.deadline = at;
        if !w.timer_thread && at.is_some() {
            w.timer_thread = true;
            let (shared, weak) = (self.0.clone(), sched.downgrade());
            std::thread::Builder::new()
                .name("streams-timer".into())
                .spawn(move || {
                    thread_started();
                    shared.timer(weak);
                    lock(&shared.workers).timer_thread = false;
                })
                .expect("spawn the STREAMS timer thread");
        }
        self.0.timer_cv.notify_all();
    }
    fn wait(&self, sched: &dyn Scheduler, word: &AtomicU32, expected: u32) {
        // A worker blocking here (a service procedure waiting for its perimeter) may be the
        // last one awake while the work that would free the perimeter (an outer writer, a
        // drain) waits in the task queue behind it: hand that work to another worker, or
        // every worker can end up asleep with the queue full.
        if sched.has_queued_tasks() {
            self.wake_worker(sched);
        }
        let (m, cv) = self.0.bucket(word);
        let g = lock(m);
        if word.load(Ordering::SeqCst) == expected {
            drop(cv.wait(g).unwrap_or_else(|e| e.into_inner()));
        }
    }
    fn wake_all(&self, word: &AtomicU32) {
        let (m, cv) = self.0.bucket(word);
        drop(lock(m));
        cv.notify_all();
    }
}
