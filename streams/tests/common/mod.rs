//! Helpers shared by the scenario tests: platforms, a module made of closures, a
//! recorder that detects overlapping routines, and latches.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use streams::*;

/// A deterministic framework instance.
pub fn det() -> (Arc<DetPlatform>, Streams) {
    let p = Arc::new(DetPlatform::new());
    let s = Streams::new(p.clone(), StreamsConfig::default());
    (p, s)
}

/// A threaded framework instance.
pub fn host() -> Streams {
    HostPlatform::streams(StreamsConfig::default())
}

/// A message of type `ty` in band `band` holding `bytes`.
pub fn msg(s: &Streams, ty: MsgType, band: u8, bytes: &[u8]) -> Mblk {
    let mut m = s.allocb(bytes.len()).expect("allocb");
    m.write(bytes).unwrap();
    m.set_type(ty);
    m.set_band(band);
    m
}

/// An M_DATA message with `bytes`.
pub fn data(s: &Streams, bytes: &[u8]) -> Mblk {
    msg(s, MsgType::M_DATA, 0, bytes)
}

pub type PutFn = dyn Fn(Q<'_>, Mblk) + Send + Sync;
pub type SrvFn = dyn Fn(Q<'_>) + Send + Sync;
pub type OpenFn = dyn Fn(Q<'_>) -> Result<(), Errno> + Send + Sync;
pub type CloseFn = dyn Fn(Q<'_>) + Send + Sync;

/// A module whose entry points are closures (shared by all instances).
#[derive(Clone)]
pub struct Fns {
    pub put: Arc<PutFn>,
    pub srv: Option<Arc<SrvFn>>,
    pub open: Option<Arc<OpenFn>>,
    pub close: Option<Arc<CloseFn>>,
}

impl Fns {
    /// put = pass along (putnext), default open/close.
    pub fn pass() -> Fns {
        Fns {
            put: Arc::new(|q, m| q.putnext(m)),
            srv: None,
            open: None,
            close: None,
        }
    }
    pub fn put(mut self, f: impl Fn(Q<'_>, Mblk) + Send + Sync + 'static) -> Self {
        self.put = Arc::new(f);
        self
    }
    pub fn srv(mut self, f: impl Fn(Q<'_>) + Send + Sync + 'static) -> Self {
        self.srv = Some(Arc::new(f));
        self
    }
    pub fn open(mut self, f: impl Fn(Q<'_>) -> Result<(), Errno> + Send + Sync + 'static) -> Self {
        self.open = Some(Arc::new(f));
        self
    }
    pub fn close(mut self, f: impl Fn(Q<'_>) + Send + Sync + 'static) -> Self {
        self.close = Some(Arc::new(f));
        self
    }
}

struct FnModule(Fns);

impl Module for FnModule {
    fn open(&self, q: Q<'_>, _how: OpenHow) -> Result<(), Errno> {
        match &self.0.open {
            Some(f) => f(q),
            None => q.qprocson().map_err(|_| Errno::EINVAL),
        }
    }
    fn close(&self, q: Q<'_>) {
        match &self.0.close {
            Some(f) => f(q),
            None => {
                q.qprocsoff().unwrap();
            }
        }
    }
    fn put(&self, q: Q<'_>, m: Mblk) {
        (self.0.put)(q, m)
    }
    fn srv(&self, q: Q<'_>) {
        if let Some(f) = &self.0.srv {
            f(q)
        }
    }
}

/// Registers a module named `name` with `flags`, service procedures on the queues named
/// by `srv` (read, write), and entry points `fns`.
pub fn def(name: &'static str, flags: u32, srv: (bool, bool), fns: Fns) -> Arc<ModuleDef> {
    ModuleDef::builder(name)
        .flags(flags)
        .srv(srv.0, srv.1)
        .build(move || FnModule(fns.clone()))
        .unwrap()
}

/// Like [`def`] with explicit queue limits.
pub fn def_info(
    name: &'static str,
    flags: u32,
    srv: (bool, bool),
    info: ModuleInfo,
    fns: Fns,
) -> Arc<ModuleDef> {
    ModuleDef::builder(name)
        .flags(flags)
        .srv(srv.0, srv.1)
        .info(info)
        .build(move || FnModule(fns.clone()))
        .unwrap()
}

/// A driver that queues what it receives on the write side on its write queue (no srv,
/// so nothing is scheduled) — a sink whose contents the test inspects.
pub fn sink_driver(name: &'static str) -> Arc<ModuleDef> {
    def(
        name,
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put(|q, m| q.putq(m)),
    )
}

/// Records entries and exits of routines and notices overlaps. Only entries made by
/// *other* threads count as overlaps: a routine nested in the same thread (a qwriter
/// callback run at once) is not a concurrent one.
#[derive(Default)]
pub struct Recorder {
    log: Mutex<Vec<String>>,
    inside: Mutex<Vec<(String, std::thread::ThreadId)>>,
    overlaps: AtomicUsize,
}

/// Proof of being inside a routine; records the exit when dropped.
pub struct Inside<'a> {
    rec: &'a Recorder,
    name: String,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }
    /// Records entry into `name`; `exclusive_with` lists prefixes that no other thread may
    /// be inside now.
    pub fn enter(&self, name: impl Into<String>, exclusive_with: &[&str]) -> Inside<'_> {
        let name = name.into();
        let me = std::thread::current().id();
        let mut inside = self.inside.lock().unwrap();
        let clash = |(n, t): &(String, std::thread::ThreadId)| {
            *t != me && exclusive_with.iter().any(|p| n.starts_with(p))
        };
        if inside.iter().any(clash) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        inside.push((name.clone(), me));
        self.log.lock().unwrap().push(format!("+{name}"));
        Inside { rec: self, name }
    }
    /// Records a point event.
    pub fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    pub fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }
    /// The routines inside right now.
    pub fn inside_now(&self) -> Vec<String> {
        self.inside
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        let mut inside = self.rec.inside.lock().unwrap();
        if let Some(i) = inside
            .iter()
            .rposition(|(n, t)| *n == self.name && *t == me)
        {
            inside.remove(i);
        }
        self.rec.log.lock().unwrap().push(format!("-{}", self.name));
    }
}

/// A gate threads wait at until it is opened.
#[derive(Default)]
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn new() -> Arc<Latch> {
        Arc::new(Latch::default())
    }
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
    pub fn wait(&self) {
        let mut g = self.open.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
    }
    pub fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }
}

/// Counts arrivals and lets a test wait until `n` have arrived.
#[derive(Default)]
pub struct Counter {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Counter {
    pub fn new() -> Arc<Counter> {
        Arc::new(Counter::default())
    }
    pub fn add(&self) {
        *self.n.lock().unwrap() += 1;
        self.cv.notify_all();
    }
    pub fn get(&self) -> usize {
        *self.n.lock().unwrap()
    }
    pub fn wait_for(&self, n: usize) {
        let mut g = self.n.lock().unwrap();
        while *g < n {
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// The data of each message in a queue, as strings.
pub fn contents(q: &QueueRef) -> Vec<String> {
    let mut out = Vec::new();
    q.for_each(|m| out.push(String::from_utf8_lossy(m.data()).into_owned()));
    out
}

impl Counter {
    /// Waits until `n` arrivals or `ms` milliseconds pass; true if `n` were reached. Used
    /// to show that something does *not* happen (a bounded wait, never a synchronisation).
    pub fn wait_for_timeout(&self, n: usize, ms: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut g = self.n.lock().unwrap();
        while *g < n {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }
}

/// Aborts the test process if the test is still running after `secs` seconds, so that a
/// deadlock fails loudly instead of hanging CI. Dropping the guard disarms it.
pub struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

pub fn watchdog(secs: u64) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let name = std::thread::current().name().unwrap_or("?").to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(std::time::Duration::from_secs(secs))
        {
            eprintln!("watchdog: test {name} still running after {secs} s: deadlock; aborting");
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Whether `log` has `a` before `b` (both present).
pub fn before(log: &[String], a: &str, b: &str) -> bool {
    match (
        log.iter().position(|x| x == a),
        log.iter().position(|x| x == b),
    ) {
        (Some(i), Some(j)) => i < j,
        _ => false,
    }
}

/// The text of a message's first block.
pub fn text(m: &Mblk) -> String {
    String::from_utf8_lossy(m.data()).into_owned()
}

/// Whether `log` holds `s`.
pub fn has(log: &[String], s: &str) -> bool {
    log.iter().any(|x| x == s)
}

/// Waits (yielding) until `cond` holds: for states that have no event to wait on.
pub fn until(cond: impl Fn() -> bool) {
    while !cond() {
        std::thread::yield_now();
    }
}

/// Results collected from inside routines.
pub type Results<T> = Arc<Mutex<Vec<T>>>;
