//! The platform the core runs on: time, waking background work, and blocking waits.
//!
//! Three implementations exist: [`crate::HostPlatform`] (threads, feature `std`),
//! [`DetPlatform`] here (single-threaded and deterministic, for tests), and the guest's.
//! Every method that an interrupt handler may reach ([`Platform::kick`], [`Platform::wake_all`])
//! must neither block nor spin.
//!
//! `put` from an interrupt handler never waits: not for a perimeter (it defers the message)
//! nor for a plumbing change (it parks the message). It does take the core's short internal
//! locks, which are spin locks under `no_std`, so a platform whose interrupt handlers call
//! `put` must not run them while the interrupted context is inside one of those locks on
//! the same CPU: it defers the upcall until the context leaves (the guest platform's job).
//! `canputnext` and `putnext` from outside an entry point wait while links are rewritten
//! (a few microseconds); an interrupt handler should use `put` on its own queue.

use crate::sync::{AtomicU32, AtomicU64, Ordering, Weak};

/// Clock ticks, the unit of `qtimeout`. The platform decides how long a tick is.
pub type Ticks = u64;

/// What the STREAMS core needs from the machine it runs on.
pub trait Platform: Send + Sync + 'static {
    /// The current time in ticks.
    fn now(&self) -> Ticks;
    /// Work was queued on `sched` (a service procedure, a background drain, a callback).
    /// The platform arranges for [`Scheduler::run_pending`] to be called soon. Never blocks.
    fn kick(&self, sched: &dyn Scheduler);
    /// The earliest timer deadline is now `at` (or there is none). The platform arranges for
    /// [`Scheduler::run_timers`] to be called once that time has come.
    fn timer_deadline(&self, sched: &dyn Scheduler, at: Option<Ticks>);
    /// Blocks the calling thread while `word` holds `expected`. May return spuriously. The
    /// platform may run queued work meanwhile ([`Scheduler::run_one`]).
    fn wait(&self, sched: &dyn Scheduler, word: &AtomicU32, expected: u32);
    /// Wakes every thread blocked in [`Platform::wait`] on `word`. Never blocks.
    fn wake_all(&self, word: &AtomicU32);
}

/// What a platform may ask of the framework instance it serves: to run its background work
/// and its timers. [`crate::Streams`] is one; the platform sees nothing else of it.
pub trait Scheduler: Send + Sync {
    /// Runs all queued background work.
    fn run_pending(&self);
    /// Fires every timer that is due.
    fn run_timers(&self);
    /// Runs one queued piece of background work; false if there was none.
    fn run_one(&self) -> bool;
    /// Whether background work is queued and not yet taken by any thread.
    fn has_queued_tasks(&self) -> bool;
    /// A handle that does not keep the instance alive (for a platform's own threads).
    fn downgrade(&self) -> Weak<dyn Scheduler>;
}

/// A single-threaded platform with a manual clock: nothing runs until the test says so.
///
/// Background work stays queued until [`crate::Streams::run_until_idle`]; timers fire only in
/// [`DetPlatform::advance`]. A blocking wait runs queued work in the waiting thread and
/// panics if there is none, since nothing else could ever wake it.
#[derive(Default)]
pub struct DetPlatform {
    clock: AtomicU64,
}

impl DetPlatform {
    /// A platform whose clock starts at tick 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advances the clock by `ticks`, fires the timers that are due and runs all queued work.
    pub fn advance(&self, sched: &dyn Scheduler, ticks: Ticks) {
        self.clock.fetch_add(ticks, Ordering::SeqCst);
        sched.run_timers();
        sched.run_pending();
    }
}

impl Platform for DetPlatform {
    fn now(&self) -> Ticks {
        self.clock.load(Ordering::SeqCst)
    }
    fn kick(&self, _sched: &dyn Scheduler) {}
    fn timer_deadline(&self, _sched: &dyn Scheduler, _at: Option<Ticks>) {}
    fn wait(&self, sched: &dyn Scheduler, word: &AtomicU32, expected: u32) {
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        if !sched.run_one() {
            panic!("deterministic platform: a wait that nothing can ever end (deadlock)");
        }
    }
    fn wake_all(&self, _word: &AtomicU32) {}
}
