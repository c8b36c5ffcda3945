//! The framework instance: the buffer pool, background work (service procedures, drains,
//! outer writers, callbacks, esballoc frees, bufcalls) and timers, run on a [`Platform`].

use crate::callback::{CbRec, CbState};
use crate::msg::{FreeRoutine, Mblk};
use crate::perimeter::Outer;
use crate::platform::{Platform, Scheduler, Ticks};
use crate::pool::{FaultPolicy, Pool, PoolConfig, PoolOwner, PoolStats};
use crate::queue::QueueRef;
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, Weak};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// Settings of a [`Streams`] instance.
#[derive(Clone, Copy, Debug)]
pub struct StreamsConfig {
    /// Capacity of the buffer pool behind allocb.
    pub pool: PoolConfig,
    /// Most bufcall requests outstanding at once; qbufcall returns 0 beyond it.
    pub max_bufcalls: usize,
    /// Messages deferred for one queue beyond which its nearest service queue becomes
    /// QFULL (`sq_max_size`).
    pub syncq_max: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            pool: PoolConfig::default(),
            max_bufcalls: 4096,
            syncq_max: 10_000,
        }
    }
}

/// While fault injection is on, a bufcall whose size fits may still fail its allocation (an
/// injected failure) and re-arm at once: a module doing so would spin. At most this many
/// such bufcalls fire per tick; the rest wait for the next tick.
pub const FAULTED_FIRES_PER_TICK: usize = 64;

const NO_RETRY: Ticks = Ticks::MAX;

pub(crate) enum Task {
    Service(QueueRef),
    Outer(Arc<Outer>),
    Callback(Arc<CbRec>),
    Free(FreeRoutine),
    Bufcalls,
}

pub(crate) struct Inner {
    /// The instance itself, for [`Scheduler`] calls that arrive through a weak handle.
    me: Weak<Inner>,
    platform: Arc<dyn Platform>,
    pool: Arc<Pool>,

    config: StreamsConfig,
    tasks: Mutex<VecDeque<Task>>,
    /// Tasks queued or running (quiesce waits for 0).
    pub(crate) busy: AtomicU32,
    timers: Mutex<BTreeMap<(Ticks, u64), Arc<CbRec>>>,
    bufcalls: Mutex<VecDeque<Arc<CbRec>>>,

    bufcall_task_queued: AtomicBool,
    /// Bufcalls fired while fault injection is on: (tick, how many in that tick).
    faulted_fires: Mutex<(Ticks, usize)>,
    /// When bufcalls held back by [`FAULTED_FIRES_PER_TICK`] are looked at again
    /// ([`NO_RETRY`]: none are). Changed under the timers lock.
    bufcall_retry: AtomicU64,
    pub(crate) callbacks: Mutex<BTreeMap<u64, Arc<CbRec>>>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Cached data blocks hold the pool; let them go with the instance.
        self.pool.clear_cache();
    }
}

/// A STREAMS framework instance (what the kernel is to illumos STREAMS). Cheap to clone.
#[derive(Clone)]
pub struct Streams(pub(crate) Arc<Inner>);

impl Streams {
    /// A framework instance on `platform`.
    pub fn new(platform: Arc<dyn Platform>, config: StreamsConfig) -> Streams {
        let s = Streams(Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            platform,
            pool: Arc::new(Pool::new(config.pool)),
            config,
            tasks: Mutex::new(VecDeque::new()),
            busy: AtomicU32::new(0),
            timers: Mutex::new(BTreeMap::new()),
            bufcalls: Mutex::new(VecDeque::new()),

            bufcall_task_queued: AtomicBool::new(false),
            faulted_fires: Mutex::new((0, 0)),
            bufcall_retry: AtomicU64::new(NO_RETRY),
            callbacks: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }));
        let owner: Weak<dyn PoolOwner> = Arc::downgrade(&s.0) as _;
        s.0.pool.set_owner(owner);
        s
    }

    pub(crate) fn syncq_max(&self) -> usize {
        self.0.config.syncq_max
    }

    pub(crate) fn platform(&self) -> &dyn Platform {
        &*self.0.platform
    }

    /// The current time in ticks.
    pub fn now(&self) -> Ticks {
        self.0.platform.now()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.0.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Allocates a message block of at least `size` bytes (`allocb`): type M_DATA, empty,
    /// band 0, one reference. `None` when the pool is exhausted or a fault is injected.
    pub fn allocb(&self, size: usize) -> Option<Mblk> {
        self.0.pool.allocb(size)
    }

    /// Wraps a caller's buffer as a message (`esballoc`); `free` runs some time after the
    /// last reference is dropped (from background work, never inside the freeing call).
    ///
    /// # Safety
    /// `base..base + len` must stay valid for reads and writes, and be used by nobody else,
    /// until `free` has been called.
    pub unsafe fn esballoc(&self, base: *mut u8, len: usize, free: FreeRoutine) -> Option<Mblk> {
        // SAFETY: forwarded from the caller.
        unsafe { self.external(base, len, free, false) }
    }

    /// Like [`Streams::esballoc`], but `free` runs synchronously in the thread that drops the
    /// last reference (`desballoc`); it must not block.
    ///
    /// # Safety
    /// As for [`Streams::esballoc`].
    pub unsafe fn desballoc(&self, base: *mut u8, len: usize, free: FreeRoutine) -> Option<Mblk> {
        // SAFETY: forwarded from the caller.
        unsafe { self.external(base, len, free, true) }
    }

    /// # Safety
    /// As for [`Streams::esballoc`].
    unsafe fn external(
        &self,
        base: *mut u8,
        len: usize,
        free: FreeRoutine,
        free_now: bool,
    ) -> Option<Mblk> {
        if !self.0.pool.charge(0) {
            return None;
        }
        // SAFETY: forwarded from the caller.
        let mut mp = unsafe { Mblk::external(&self.0.pool, base, len, free, free_now) };
        mp.set_ptrs(0, len).expect("whole buffer");
        Some(mp)
    }

    /// Sets the pool's fault-injection policies (an empty list turns injection off).
    pub fn set_faults(&self, faults: Vec<FaultPolicy>) {
        self.0.pool.set_faults(faults)
    }

    /// The pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.0.pool.stats()
    }

    /// Whether background work is queued and not yet taken by any thread (a platform's idle
    /// loop asks before it halts).
    pub fn has_queued_tasks(&self) -> bool {
        !self.0.tasks.lock().is_empty()
    }

    pub(crate) fn push_task(&self, task: Task) {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        self.0.tasks.lock().push_back(task);
        self.0.platform.kick(self);
    }

    /// A running task parked itself on a perimeter: it stays counted as pending work.
    pub(crate) fn task_parked(&self) {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
    }

    /// A parked task was queued again ([`Streams::push_task`] counted it anew).
    pub(crate) fn task_unparked(&self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.platform.wake_all(&self.0.busy);
        }
    }

    pub(crate) fn schedule_service(&self, q: QueueRef) {
        self.push_task(Task::Service(q));
    }

    pub(crate) fn schedule_outer(&self, outer: Arc<Outer>) {
        self.push_task(Task::Outer(outer));
    }

    pub(crate) fn schedule_callback(&self, rec: Arc<CbRec>) {
        self.push_task(Task::Callback(rec));
    }

    fn schedule_bufcalls(&self) {
        if !self.0.bufcall_task_queued.swap(true, Ordering::SeqCst) {
            self.push_task(Task::Bufcalls);
        }
    }

    /// Runs one queued piece of background work; false if there was none.
    pub fn run_one(&self) -> bool {
        let Some(task) = self.0.tasks.lock().pop_front() else {
            return false;
        };
        match task {
            Task::Service(q) => q.pair.runservice(&q),
            Task::Outer(o) => o.run_queued(self),
            Task::Callback(rec) => rec.run(self),
            Task::Free(f) => f(),
            Task::Bufcalls => self.run_bufcalls(),
        }
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.platform.wake_all(&self.0.busy);
        }
        true
    }

    /// Runs queued background work until there is none (the test hook `run_until_idle`).
    pub fn run_until_idle(&self) {
        while self.run_one() {}
    }

    /// What platforms call when kicked: runs all queued background work.
    pub fn run_pending(&self) {
        self.run_until_idle()
    }

    /// Waits until no background work is queued or running and no timer is due (`quiesce`).
    /// Fires due timers and runs work in this thread while any is queued, then sleeps until
    /// running work finishes.
    pub fn quiesce(&self) {
        loop {
            self.run_timers();
            self.run_until_idle();
            let b = self.0.busy.load(Ordering::SeqCst);
            if b == 0 {
                return;
            }
            self.0.platform.wait(self, &self.0.busy, b);
        }
    }

    // ---- timers ----

    pub(crate) fn add_timer(&self, rec: Arc<CbRec>) {
        // The deadline is published under the timers lock, so that a concurrent
        // run_timers cannot overwrite it with an older answer.
        let mut t = self.0.timers.lock();
        t.insert((rec.deadline, rec.id), rec);
        self.publish_deadline(&t);
    }

    /// Tells the platform the earliest deadline: a timer's or the bufcall retry's. Called
    /// with the timers lock held.
    fn publish_deadline(&self, t: &BTreeMap<(Ticks, u64), Arc<CbRec>>) {
        let retry = self.0.bufcall_retry.load(Ordering::SeqCst);
        let first = t.keys().next().map(|k| k.0);
        let at = match (first, retry) {
            (f, NO_RETRY) => f,
            (Some(f), r) => Some(f.min(r)),
            (None, r) => Some(r),
        };
        self.0.platform.timer_deadline(self, at);
    }

    /// Looks at the bufcalls again at tick `at` (or earlier, if already asked).
    fn retry_bufcalls_at(&self, at: Ticks) {
        let t = self.0.timers.lock();
        self.0.bufcall_retry.fetch_min(at, Ordering::SeqCst);
        self.publish_deadline(&t);
    }

    /// Removes a pending timer; returns its deadline if it was pending.
    pub(crate) fn remove_timer(&self, rec: &CbRec) -> Option<Ticks> {
        self.0
            .timers
            .lock()
            .remove(&(rec.deadline, rec.id))
            .map(|r| r.deadline)
    }

    /// Fires every timer that is due (the platform calls this when a deadline passes).
    pub fn run_timers(&self) {
        let now = self.now();
        let (due, retry) = {
            let mut t = self.0.timers.lock();
            let later = t.split_off(&(now + 1, 0));
            let due = core::mem::replace(&mut *t, later);
            // Fired under the lock too, so that a canceller never sees a request that is
            // off the list but still pending.
            for rec in due.values() {
                rec.transition(CbState::Pending, CbState::Fired);
            }
            let retry = self.0.bufcall_retry.load(Ordering::SeqCst) <= now;
            if retry {
                self.0.bufcall_retry.store(NO_RETRY, Ordering::SeqCst);
            }
            self.publish_deadline(&t);
            (due, retry)
        };
        if retry {
            self.schedule_bufcalls();
        }
        for rec in due.into_values() {
            if rec.state_is(CbState::Fired) {
                self.schedule_callback(rec);
            }
        }
    }

    // ---- bufcalls ----

    pub(crate) fn add_bufcall(&self, rec: Arc<CbRec>) -> bool {
        {
            let mut b = self.0.bufcalls.lock();
            if b.len() >= self.0.config.max_bufcalls {
                return false;
            }
            b.push_back(rec);
            self.0.pool.bufcalls_waiting.store(true, Ordering::SeqCst);
        }
        self.schedule_bufcalls();
        true
    }

    pub(crate) fn remove_bufcall(&self, rec: &CbRec) -> bool {
        let mut b = self.0.bufcalls.lock();
        let before = b.len();
        b.retain(|r| r.id != rec.id);
        if b.is_empty() {
            self.0.pool.bufcalls_waiting.store(false, Ordering::SeqCst);
        }
        b.len() != before
    }

    /// One pass over the bufcall list: each request whose size fits now is fired, no more
    /// than [`FAULTED_FIRES_PER_TICK`] in a tick while faults are injected.
    fn run_bufcalls(&self) {
        self.0.bufcall_task_queued.store(false, Ordering::SeqCst);
        let now = self.now();
        let mut held_back = false;
        let fire: Vec<Arc<CbRec>> = {
            let mut b = self.0.bufcalls.lock();
            let mut budget = usize::MAX;
            let mut fires = self.0.faulted_fires.lock();
            let faulted = self.0.pool.has_faults();
            if faulted {
                if fires.0 != now {
                    *fires = (now, 0);
                }
                budget = FAULTED_FIRES_PER_TICK.saturating_sub(fires.1);
            }
            let (mut fire, mut keep) = (Vec::new(), VecDeque::new());
            for r in b.drain(..) {
                if !self.0.pool.would_fit(r.size) {
                    keep.push_back(r);
                } else if budget == 0 {
                    held_back = true;
                    keep.push_back(r);
                } else {
                    budget -= 1;
                    fire.push(r);
                }
            }
            if faulted {
                fires.1 += fire.len();
            }
            *b = keep;
            if b.is_empty() {
                self.0.pool.bufcalls_waiting.store(false, Ordering::SeqCst);
            }
            for rec in &fire {
                rec.transition(CbState::Pending, CbState::Fired);
            }
            fire
        };
        if held_back {
            self.retry_bufcalls_at(now + 1);
        }
        for rec in fire {
            if rec.state_is(CbState::Fired) {
                self.schedule_callback(rec);
            }
        }
    }
}

impl Scheduler for Streams {
    fn run_pending(&self) {
        Streams::run_pending(self)
    }
    fn run_timers(&self) {
        Streams::run_timers(self)
    }
    fn run_one(&self) -> bool {
        Streams::run_one(self)
    }
    fn has_queued_tasks(&self) -> bool {
        Streams::has_queued_tasks(self)
    }
    fn downgrade(&self) -> Weak<dyn Scheduler> {
        Arc::downgrade(&self.0) as _
    }
}

/// What a platform thread holding a weak handle reaches once it upgrades it.
impl Scheduler for Inner {
    fn run_pending(&self) {
        if let Some(s) = self.me.upgrade() {
            Streams(s).run_pending()
        }
    }
    fn run_timers(&self) {
        if let Some(s) = self.me.upgrade() {
            Streams(s).run_timers()
        }
    }
    fn run_one(&self) -> bool {
        self.me.upgrade().is_some_and(|s| Streams(s).run_one())
    }
    fn has_queued_tasks(&self) -> bool {
        !self.tasks.lock().is_empty()
    }
    fn downgrade(&self) -> Weak<dyn Scheduler> {
        self.me.clone() as _
    }
}

/// What the pool reports to the instance that owns it.
impl PoolOwner for Inner {
    fn buffers_returned(self: Arc<Self>) {
        Streams(self).schedule_bufcalls()
    }
    fn defer_free(self: Arc<Self>, free: FreeRoutine) {
        Streams(self).push_task(Task::Free(free))
    }
}
