//! Perimeters: the inner perimeter (a syncq) and the outer perimeter around all instances.
//!
//! # Big theory statement
//!
//! **State.** A [`Syncq`] is one 32-bit word plus two deferral lists:
//!
//! ```text
//!  bit 0 EXCL        a thread holds the perimeter exclusively
//!  bit 1 BLOCKED     plumbing (qprocson/qprocsoff) in progress: stay away (counted in
//!                    `blockers`: streams sharing a D_MTPERMOD syncq may plumb at once)
//!  bit 2 FROZEN      freezestr: stay away
//!  bit 3 WRITER      an outer-perimeter writer is pending or running: stay away
//!  bit 4 MESSAGES    the message list is non-empty
//!  bit 5 EVENTS      the qwriter event list is non-empty
//!  bit 6 WANTWAKEUP  a thread sleeps until the word changes (blocking entry, plumbing)
//!  bit 7 WANTEXWAKEUP a qwait sleeper waits for a thread to leave put/srv/callback
//!  8..20  count      claims: threads inside (shared or the one exclusive holder)
//!  20..29 needexcl   threads waiting to enter exclusively (puts defer while > 0)
//!  bit 29 TASKWAIT   background work is parked here until the word changes
//!  bit 30 OUTERWAIT  the outer's background writer waits for the count to reach 0
//!  bit 31 POKE       toggled to wake sleepers for a cancellation or a signal
//! ```
//!
//! STAYAWAY = BLOCKED|FROZEN|WRITER; QUEUED = MESSAGES|EVENTS.
//!
//! **Entries.** `put` never blocks: one CAS takes a claim (and EXCL, unless shared) when
//! nothing is queued, nothing says stay away, no holder is exclusive and no exclusive entry
//! waits; otherwise the message goes on the message list and the thread tries to drain.
//! open/close block: a shared entry waits while STAYAWAY|EVENTS|EXCL; an exclusive one
//! registers in needexcl and waits, in addition, until the count is 0 and the messages
//! deferred before it were delivered: it drains those itself (other drainers stop while an
//! exclusive entry waits), then enters even if a flood of puts deferred more meanwhile;
//! those wait for its leave. srv and callbacks,
//! which run as background tasks (perhaps on the stack of a blocked thread, on a platform
//! such as the guest's), never block: under the same conditions they park their task on the
//! syncq (TASKWAIT) and return; whoever next drops a claim or clears a STAYAWAY bit queues
//! every parked task again.
//!
//! **Leaving** drops the claim (and EXCL), wakes sleepers if a WANT bit was set, and if the
//! count fell to 0 with work queued and nothing saying stay away, drains.
//!
//! **Draining** takes an exclusive claim, runs qwriter events first (FIFO, each alone), then
//! messages (FIFO), stopping as soon as STAYAWAY or EVENTS appears, then leaves and looks
//! again. Whoever leaves last, or clears a STAYAWAY bit, drains: there is always a thread
//! responsible for queued work, so nothing is stranded (no lost wake-up). The flags MESSAGES
//! and EVENTS change only under the lists' lock, together with the lists.
//!
//! **Outer perimeter.** [`Outer`] holds BUSY (a writer holds or is acquiring it) and EVENTS
//! (queued qwriter(PERIM_OUTER) callbacks). Shared outer entry is implicit; the exclusive
//! holder sets WRITER on every inner syncq, waits for their counts to drop to the claims it
//! holds itself, runs. The background writer (a queued task, which runs where a blocked
//! thread may run tasks on its own stack) never waits: finding an instance busy, it sets
//! OUTERWAIT there, releases BUSY with the WRITER marks left in place, and returns; the
//! thread whose leaving brings that count to 0 clears OUTERWAIT and queues the writer
//! again. A writer task that finds BUSY taken leaves RERUN for the holder, which queues it
//! again when it lets go. A writer waiting either way stays counted as pending work, so
//! `quiesce` does not return before it has run. An exclusive outer is always taken *before* an inner (D_MTOCEXCL
//! open/close and qwait's return take the outer, then their inner ignoring WRITER and the
//! work deferred behind it), so no thread waits for BUSY while holding an inner that the
//! holder waits for; a qwriter(PERIM_OUTER) caller that holds its inner never waits for
//! BUSY, it queues. On exit the holder runs the queued outer events, each inside its
//! target's inner perimeter, clears WRITER everywhere under the inners lock, releases BUSY,
//! and only then drains every inner.
//!
//! **Invariants.** (1) EXCL implies count ≥ 1 and, for a non-shared perimeter, count = 1.
//! (2) A message or event is on a list only while MESSAGES/EVENTS is set. (3) When count = 0,
//! EXCL = 0, STAYAWAY = 0 and QUEUED ≠ 0, the last thread to make it so drains, or, while
//! needexcl ≠ 0, the waiting exclusive entry (every change that could let it in wakes it).
//! (4) Per destination queue, messages are delivered in the order they were put.
//! Debug builds check (1) wherever a claim is taken or dropped and (2) wherever a flag follows
//! its list; [`drainable`] is (3)'s condition, the one test every drain path makes.
//!
//! **Plumbing.** qprocson/qprocsoff (under the stream's operation lock) set BLOCKED on every
//! syncq of the stream, wait until only their own claims remain, then raise the stream's
//! `plumbing` word and wait for walkers (threads following links from outside any entry
//! point) to leave; a walker that meets the raised word backs off until it drops, except a
//! `put` from outside, which parks its message on the stream to be handed on, in order,
//! when the change ends (so that put never blocks). Links change only then, so a thread
//! holding a claim or counted as a walker may follow them.
//!
//! **Lock order.** stream operation lock → outer inners/events lock → syncq blockers and
//! lists locks → queue list lock. No lock but the operation lock is held while a module
//! routine runs or while a thread sleeps; the operation lock is held across open and close.
//!
//! **Who calls what.** put/qwriter/qtimeout/qbufcall paths enter here from any thread; an
//! interrupt handler may `put` (it never blocks). Blocking entries (open, close, qwait's
//! re-entry, plumbing) come only from threads that may sleep; background tasks (srv,
//! callbacks, the outer's writer) never block on a perimeter, since a platform may run them
//! on the stack of a thread that is blocked holding what they would wait for.

use crate::msg::Mblk;
use crate::queue::{Entry, Q, QWCLOSE, QueueRef};
use crate::sched::{Streams, Task};
use crate::sync::{Arc, AtomicU32, Mutex, Ordering, Weak};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Syncq flag: held exclusively.
pub const SQ_EXCL: u32 = 1 << 0;
/// Syncq flag: plumbing in progress.
pub const SQ_BLOCKED: u32 = 1 << 1;
/// Syncq flag: frozen.
pub const SQ_FROZEN: u32 = 1 << 2;
/// Syncq flag: an outer-perimeter writer is pending or running.
pub const SQ_WRITER: u32 = 1 << 3;
/// Syncq flag: messages are deferred.
pub const SQ_MESSAGES: u32 = 1 << 4;
/// Syncq flag: qwriter events are deferred.
pub const SQ_EVENTS: u32 = 1 << 5;
pub(crate) const EXCL: u32 = SQ_EXCL;
pub(crate) const BLOCKED: u32 = SQ_BLOCKED;
const FROZEN: u32 = SQ_FROZEN;
pub(crate) const WRITER: u32 = SQ_WRITER;
const MESSAGES: u32 = SQ_MESSAGES;
const EVENTS: u32 = SQ_EVENTS;
const WANTWAKEUP: u32 = 1 << 6;
const WANTEXWAKEUP: u32 = 1 << 7;
const COUNT_SHIFT: u32 = 8;
const COUNT_ONE: u32 = 1 << COUNT_SHIFT;
const COUNT_MASK: u32 = 0xfff << COUNT_SHIFT;
const NEEDEXCL_ONE: u32 = 1 << 20;
const NEEDEXCL_MASK: u32 = 0x1ff << 20;
/// Background work (a service or callback) is parked on this syncq.
const TASKWAIT: u32 = 1 << 29;
/// The outer's background writer waits for this syncq's count to reach 0.
const OUTERWAIT: u32 = 1 << 30;
/// Toggled by [`Syncq::wake`] so that a sleeper that read the word before sees a change.
const POKE: u32 = 1 << 31;
const STAYAWAY: u32 = BLOCKED | FROZEN | WRITER;
const QUEUED: u32 = MESSAGES | EVENTS;

fn count(s: u32) -> u32 {
    (s & COUNT_MASK) >> COUNT_SHIFT
}

/// The condition of invariant (3): nobody inside, nothing saying stay away, work queued.
/// Whoever makes a word so, or finds it so, drains.
fn drainable(st: u32) -> bool {
    count(st) == 0 && st & (EXCL | STAYAWAY) == 0 && st & QUEUED != 0
}

/// `st` with one more claim (and EXCL with `excl`).
fn with_claim(st: u32, excl: bool) -> u32 {
    debug_assert!(
        count(st) < COUNT_MASK >> COUNT_SHIFT,
        "claims overflow: {st:#x}"
    );
    // Invariant (1): an exclusive claim is the only one.
    debug_assert!(
        !excl || count(st) == 0,
        "exclusive entry beside claims: {st:#x}"
    );
    (st + COUNT_ONE) | if excl { EXCL } else { 0 }
}

/// A qwriter callback.
pub(crate) type WriterFn = Box<dyn FnOnce(Q<'_>, Mblk) + Send>;

/// A deferred qwriter call.
pub(crate) struct Event {
    /// The qtimeout/qbufcall callback this event was queued from, if any (0: none).
    pub(crate) cb: u64,
    pub(crate) to: QueueRef,
    pub(crate) mp: Mblk,
    pub(crate) func: WriterFn,
}

impl Event {
    fn run(self) {
        let q = Q {
            q: &self.to,
            held: self.to.side,
            cb: self.cb,
            entry: Entry::Writer,
            excl: true,
        };
        (self.func)(q, self.mp);
    }
}

#[derive(Default)]
struct Lists {
    msgs: VecDeque<(QueueRef, Mblk)>,
    events: VecDeque<Event>,
}

/// What one attempt of an entry found.
enum Step {
    /// A claim was taken.
    Entered,
    /// The word changed under us: look again.
    Again,
    /// The messages queued when we looked were delivered: look again, and enter even if
    /// more arrived since (they wait for our leave, which drains them).
    Drained,
    /// The entry must wait while the word is this.
    Wait(u32),
}

/// An inner perimeter (`syncq_t`).
pub(crate) struct Syncq {
    pub(crate) state: AtomicU32,
    lists: Mutex<Lists>,
    /// Plumbing changes holding BLOCKED (streams sharing a D_MTPERMOD syncq can overlap).
    blockers: Mutex<u32>,
    /// Claims held by threads that are themselves plumbing (their open or close): another
    /// plumbing change does not wait for those, as illumos exempts threads in insertq and
    /// removeq, or two streams sharing a D_MTPERMOD syncq could wait for each other.
    plumber_claims: AtomicU32,
    /// The outer perimeter around this syncq's instances, whose background writer the
    /// last thread to leave queues again when OUTERWAIT is set.
    outer: Mutex<Option<Weak<Outer>>>,
    /// Tasks that could not enter, queued again when the word changes (TASKWAIT).
    parked: Mutex<Vec<Task>>,
}

impl Syncq {
    pub(crate) fn new() -> Syncq {
        Syncq {
            state: AtomicU32::new(0),
            lists: Mutex::new(Lists::default()),
            blockers: Mutex::new(0),
            plumber_claims: AtomicU32::new(0),
            outer: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
        }
    }

    /// Whether an entry (`excl` or shared) may take a claim in state `st`.
    fn enterable(st: u32, excl: bool) -> bool {
        if excl {
            st & (STAYAWAY | EVENTS | EXCL | MESSAGES) == 0 && count(st) == 0
        } else {
            st & (STAYAWAY | EVENTS | EXCL) == 0
        }
    }

    /// Entry of background work (srv, a callback): takes a claim if it can now, else parks
    /// the task `park()` makes, to be queued again once the word changes, and returns false.
    /// Never blocks.
    pub(crate) fn enter_task(&self, s: &Streams, excl: bool, park: impl FnOnce() -> Task) -> bool {
        let mut drained = false;
        loop {
            match self.enter_step(s, excl, false, drained) {
                Step::Entered => return true,
                Step::Again => continue,
                Step::Drained => drained = true,
                Step::Wait(_) => break,
            }
        }
        {
            let mut p = self.parked.lock();
            p.push(park());
            self.state.fetch_or(TASKWAIT, Ordering::SeqCst);
        }
        s.task_parked();
        // A change made before TASKWAIT was visible queued nobody: look once more.
        let st = self.load();
        if Self::enterable(st, excl) || count(st) == 0 && st & (EXCL | STAYAWAY) == 0 {
            self.unpark(s);
        }
        false
    }

    /// One attempt of an entry: take a claim (dropping the caller's needexcl count with
    /// `counted`), or drain queued work nobody is responsible for, or say what to wait on.
    ///
    /// An exclusive entry waits for queued messages, but only for those queued before it
    /// drained once (`drained`): otherwise a flood of puts, each deferred because an
    /// exclusive entry is wanted, would keep it out for as long as the flood lasts.
    fn enter_step(&self, s: &Streams, excl: bool, counted: bool, drained: bool) -> Step {
        let st = self.load();
        let enterable = if drained {
            Self::enterable(st & !MESSAGES, excl)
        } else {
            Self::enterable(st, excl)
        };
        if enterable {
            let mut new = with_claim(st, excl);
            if counted {
                new -= NEEDEXCL_ONE;
            }
            return match self
                .state
                .compare_exchange(st, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => Step::Entered,
                Err(_) => Step::Again,
            };
        }
        if drainable(st) {
            let queued = self.lists.lock().msgs.len();
            self.drain_some(s, queued, true);
            return Step::Drained;
        }
        Step::Wait(st)
    }

    /// Queues every parked task again (the word changed).
    fn unpark(&self, s: &Streams) {
        let tasks = {
            let mut p = self.parked.lock();
            self.state.fetch_and(!TASKWAIT, Ordering::SeqCst);
            core::mem::take(&mut *p)
        };
        for t in tasks {
            s.push_task(t);
            s.task_unparked();
        }
    }

    /// Drops a claim from `st` (and EXCL with `excl`, and the `clear` bits): the new word.
    /// OUTERWAIT goes with the last claim.
    fn without_claim(st: u32, excl: bool, clear: u32) -> u32 {
        debug_assert!(
            count(st) >= 1,
            "a claim dropped that was never taken: {st:#x}"
        );
        // Invariant (1): an exclusive leave drops EXCL along with a claim.
        debug_assert!(
            !excl || st & EXCL != 0,
            "an exclusive leave without EXCL: {st:#x}"
        );
        let mut new = (st - COUNT_ONE) & !clear;
        if excl {
            new &= !EXCL;
        }
        if count(new) == 0 {
            new &= !OUTERWAIT;
        }
        new
    }

    /// After a claim was dropped (`old` to `new`): queues parked tasks again, and the outer's
    /// background writer if it waited for this count to reach 0.
    fn after_claim(&self, s: &Streams, old: u32, new: u32) {
        if old & TASKWAIT != 0 {
            self.unpark(s);
        }
        if old & OUTERWAIT != 0 && new & OUTERWAIT == 0 {
            let outer = self.outer.lock().as_ref().and_then(Weak::upgrade);
            if let Some(outer) = outer {
                s.schedule_outer(outer);
            }
            s.task_unparked();
        }
    }

    /// The background writer of the outer around this syncq waits for its count to reach
    /// 0: false if it already is, else the thread that leaves last queues the writer. A set
    /// OUTERWAIT counts as pending work (for quiesce) until it is cleared.
    fn park_writer(&self, s: &Streams) -> bool {
        let mut st = self.load();
        loop {
            if count(st) == 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                st,
                st | OUTERWAIT,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    if st & OUTERWAIT == 0 {
                        s.task_parked();
                    }
                    return true;
                }
                Err(now) => st = now,
            }
        }
    }

    pub(crate) fn load(&self) -> u32 {
        self.state.load(Ordering::SeqCst)
    }

    pub(crate) fn count(&self) -> u32 {
        count(self.load())
    }

    /// The put fast path: one CAS, never blocks. False means "defer".
    pub(crate) fn try_enter_put(&self, excl: bool) -> bool {
        let mut s = self.load();
        loop {
            if s & (STAYAWAY | EXCL | QUEUED | NEEDEXCL_MASK) != 0 || (excl && count(s) != 0) {
                return false;
            }
            let new = with_claim(s, excl);
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Blocking entry (open, close, srv, callbacks). Returns false, without entering, if
    /// `cancelled` becomes true while waiting.
    pub(crate) fn enter(&self, s: &Streams, excl: bool, cancelled: &dyn Fn() -> bool) -> bool {
        if excl {
            self.state.fetch_add(NEEDEXCL_ONE, Ordering::SeqCst);
        }
        let mut drained = false;
        loop {
            let st = match self.enter_step(s, excl, excl, drained) {
                Step::Entered => return true,
                Step::Again => continue,
                Step::Drained => {
                    drained = true;
                    continue;
                }
                Step::Wait(st) => st,
            };
            if cancelled() {
                if excl {
                    let after = self.state.fetch_sub(NEEDEXCL_ONE, Ordering::SeqCst) - NEEDEXCL_ONE;
                    self.after_change(s, after);
                }
                return false;
            }
            self.sleep(s, st);
        }
    }

    /// Entry by a thread that holds the outer perimeter exclusively (an D_MTOCEXCL open or
    /// close, a queued qwriter(PERIM_OUTER) callback). Every instance stays away (WRITER)
    /// and work deferred meanwhile stays deferred until the outer is released, so only
    /// claims, plumbing and freezing matter here.
    pub(crate) fn enter_under_outer(&self, s: &Streams, excl: bool) {
        loop {
            let st = self.load();
            if st & (EXCL | BLOCKED | FROZEN) == 0 && (!excl || count(st) == 0) {
                let new = with_claim(st, excl);
                if self
                    .state
                    .compare_exchange(st, new, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            self.sleep(s, st);
        }
    }

    /// Sleeps until the word changes from `st` (setting WANTWAKEUP so a leaver wakes us).
    pub(crate) fn sleep(&self, s: &Streams, st: u32) {
        let want = st | WANTWAKEUP;
        if st != want
            && self
                .state
                .compare_exchange(st, want, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        s.platform().wait(s, &self.state, want);
    }

    /// Wakes every sleeper on this syncq (used by cancellation and signals).
    pub(crate) fn wake(&self, s: &Streams) {
        self.state.fetch_xor(POKE, Ordering::SeqCst);
        s.platform().wake_all(&self.state);
    }

    /// Leaves after an entry. `wake_qwait` is false only for qwait's own release.
    pub(crate) fn leave(&self, s: &Streams, excl: bool, wake_qwait: bool) {
        let clear = if wake_qwait {
            WANTWAKEUP | WANTEXWAKEUP
        } else {
            WANTWAKEUP
        };
        let mut st = self.load();
        let new = loop {
            let new = Self::without_claim(st, excl, clear);
            match self
                .state
                .compare_exchange_weak(st, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break new,
                Err(now) => st = now,
            }
        };
        if st & clear != 0 {
            s.platform().wake_all(&self.state);
        }
        self.after_claim(s, st, new);
        self.after_change(s, self.load());
    }

    /// If the state allows it, drains queued work.
    fn after_change(&self, s: &Streams, st: u32) {
        if drainable(st) {
            self.drain(s);
        }
    }

    /// Defers a message for `to` and tries to deliver what is queued.
    pub(crate) fn defer(&self, s: &Streams, to: QueueRef, mp: Mblk) {
        // Counted before it can be drained (and uncounted), so the count never goes negative.
        to.deferred_added(1);
        {
            let mut l = self.lists.lock();
            l.msgs.push_back((to, mp));
            let was = self.state.fetch_or(MESSAGES, Ordering::SeqCst);
            // Invariant (2): the flag was clear only while the list was empty.
            debug_assert!(was & MESSAGES != 0 || l.msgs.len() == 1);
        }
        self.after_change(s, self.load());
    }

    /// Appends deferred messages (moved here by qprocsoff) without draining.
    pub(crate) fn defer_many(&self, msgs: Vec<(QueueRef, Mblk)>) {
        if msgs.is_empty() {
            return;
        }
        let mut counts: Vec<(QueueRef, usize)> = Vec::new();
        for (q, _) in &msgs {
            match counts.iter_mut().find(|(c, _)| c.same(q)) {
                Some((_, n)) => *n += 1,
                None => counts.push((q.clone(), 1)),
            }
        }
        for (q, n) in counts {
            q.deferred_added(n);
        }
        let mut l = self.lists.lock();
        l.msgs.extend(msgs);
        self.state.fetch_or(MESSAGES, Ordering::SeqCst);
    }

    /// Queues a qwriter(PERIM_INNER) event.
    pub(crate) fn push_event(&self, ev: Event) {
        let mut l = self.lists.lock();
        l.events.push_back(ev);
        let was = self.state.fetch_or(EVENTS, Ordering::SeqCst);
        // Invariant (2): the flag was clear only while the list was empty.
        debug_assert!(was & EVENTS != 0 || l.events.len() == 1);
    }

    fn pop_event(&self) -> Option<Event> {
        let mut l = self.lists.lock();
        let ev = l.events.pop_front();
        if l.events.is_empty() {
            let was = self.state.fetch_and(!EVENTS, Ordering::SeqCst);
            // Invariant (2): set while an event was on the list.
            debug_assert!(ev.is_none() || was & EVENTS != 0);
        }
        ev
    }

    fn pop_msg(&self) -> Option<(QueueRef, Mblk)> {
        let mut l = self.lists.lock();
        let m = l.msgs.pop_front();
        if l.msgs.is_empty() {
            let was = self.state.fetch_and(!MESSAGES, Ordering::SeqCst);
            // Invariant (2): set while a message was on the list.
            debug_assert!(m.is_none() || was & MESSAGES != 0);
        }
        m
    }

    /// Removes the messages and events addressed to `pair` (qprocsoff).
    pub(crate) fn take_for(
        &self,
        is_pair: impl Fn(&QueueRef) -> bool,
    ) -> (Vec<(QueueRef, Mblk)>, Vec<Event>) {
        let mut l = self.lists.lock();
        let (mine, rest): (VecDeque<_>, VecDeque<_>) =
            l.msgs.drain(..).partition(|(q, _)| is_pair(q));
        l.msgs = rest;
        let (evs, rest): (VecDeque<_>, VecDeque<_>) =
            l.events.drain(..).partition(|e| is_pair(&e.to));
        l.events = rest;
        if l.msgs.is_empty() {
            self.state.fetch_and(!MESSAGES, Ordering::SeqCst);
        }
        if l.events.is_empty() {
            self.state.fetch_and(!EVENTS, Ordering::SeqCst);
        }
        (mine.into_iter().collect(), evs.into_iter().collect())
    }

    /// Runs queued events, then messages, as long as nothing says stay away.
    /// Stops (before the next message) when an exclusive entry waits: that entry drains
    /// what it must wait for itself.
    pub(crate) fn drain(&self, s: &Streams) {
        self.drain_some(s, usize::MAX, false)
    }

    /// Like [`Syncq::drain`], but returns after delivering `limit` messages; `entrant` for
    /// the drain of a waiting exclusive entry, which goes on although needexcl is set.
    fn drain_some(&self, s: &Streams, limit: usize, entrant: bool) {
        let stop = if entrant {
            STAYAWAY | EVENTS
        } else {
            STAYAWAY | EVENTS | NEEDEXCL_MASK
        };
        let mut delivered = 0;
        loop {
            let st = self.load();
            if !drainable(st) {
                return;
            }
            if !entrant && st & NEEDEXCL_MASK != 0 {
                return;
            }
            if self
                .state
                .compare_exchange(st, with_claim(st, true), Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            loop {
                if let Some(ev) = self.pop_event() {
                    ev.run();
                    continue;
                }
                if self.load() & stop != 0 {
                    break;
                }
                if delivered >= limit {
                    break;
                }
                match self.pop_msg() {
                    Some((to, mp)) => {
                        to.pair.call_put(&to, mp, true);
                        // Uncounted only after the put returned, so nothing overtakes it.
                        to.deferred_removed(1);
                        delivered += 1;
                    }
                    None => break,
                }
            }
            // Leave without recursing into drain: the loop looks again.
            let mut st = self.load();
            let new = loop {
                let new = Self::without_claim(st, true, WANTWAKEUP | WANTEXWAKEUP);
                match self
                    .state
                    .compare_exchange_weak(st, new, Ordering::SeqCst, Ordering::Relaxed)
                {
                    Ok(_) => break new,
                    Err(now) => st = now,
                }
            };
            if st & (WANTWAKEUP | WANTEXWAKEUP) != 0 {
                s.platform().wake_all(&self.state);
            }
            self.after_claim(s, st, new);
            if delivered >= limit {
                return;
            }
        }
    }

    /// Holds BLOCKED for one plumbing change.
    pub(crate) fn block(&self) {
        let mut n = self.blockers.lock();
        *n += 1;
        if *n == 1 {
            self.set_flags(BLOCKED);
        }
    }

    /// Releases one plumbing change's BLOCKED; the caller drains later.
    pub(crate) fn unblock_nodrain(&self, s: &Streams) {
        let mut n = self.blockers.lock();
        *n -= 1;
        if *n == 0 {
            self.clear_flags_nodrain(s, BLOCKED);
        }
    }

    /// Sets STAYAWAY bits (plumbing, freeze, outer writer).
    pub(crate) fn set_flags(&self, f: u32) {
        self.state.fetch_or(f, Ordering::SeqCst);
    }

    /// Clears STAYAWAY bits and wakes sleepers; the caller drains later ([`Syncq::kick_drain`]).
    pub(crate) fn clear_flags_nodrain(&self, s: &Streams, f: u32) {
        let old = self.state.fetch_and(!(f | WANTWAKEUP), Ordering::SeqCst);
        if old & WANTWAKEUP != 0 {
            s.platform().wake_all(&self.state);
        }
        if old & TASKWAIT != 0 {
            self.unpark(s);
        }
    }

    /// Drains queued work if the state allows it.
    pub(crate) fn kick_drain(&self, s: &Streams) {
        self.after_change(s, self.load());
    }

    /// Counts (or uncounts, with a negative `n`) claims of a plumbing thread, waking other
    /// plumbing changes waiting on this syncq so that they re-check.
    pub(crate) fn plumber_claims(&self, s: &Streams, n: i32) {
        if n >= 0 {
            self.plumber_claims.fetch_add(n as u32, Ordering::SeqCst);
            self.wake(s);
        } else {
            self.plumber_claims
                .fetch_sub(n.unsigned_abs(), Ordering::SeqCst);
        }
    }

    /// Waits until every claim left belongs to a plumbing thread (its own included).
    pub(crate) fn wait_plumbing(&self, s: &Streams) {
        loop {
            let st = self.load();
            if count(st) <= self.plumber_claims.load(Ordering::SeqCst) {
                return;
            }
            self.sleep(s, st);
        }
    }

    /// Waits until the count is `claims` (the claims the caller itself holds).
    pub(crate) fn wait_count(&self, s: &Streams, claims: u32) {
        loop {
            let st = self.load();
            if count(st) <= claims {
                return;
            }
            self.sleep(s, st);
        }
    }

    /// qwriter(PERIM_INNER): runs `ev` now if the caller's claim is the only one (or it
    /// already holds the perimeter exclusively), else queues it; then no thread enters
    /// until it has run. Returns whether it ran.
    pub(crate) fn qwriter_inner(&self, caller_excl: bool, ev: Event) -> bool {
        if caller_excl {
            ev.run();
            return true;
        }
        // Upgrade a shared claim when it is the only one.
        let st = self.load();
        if count(st) == 1
            && st & EXCL == 0
            && self
                .state
                .compare_exchange(st, st | EXCL, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            ev.run();
            self.state.fetch_and(!EXCL, Ordering::SeqCst);
            return true;
        }
        self.push_event(ev);
        false
    }

    /// qwait's release: drops the caller's claim and asks for an exit wake-up. Returns
    /// whether there was queued work (what was queued then is drained here, so the caller
    /// must not sleep; its re-entry drains the rest).
    pub(crate) fn qwait_release(&self, s: &Streams, excl: bool) -> bool {
        let mut old = self.load();
        let st = loop {
            let new = Self::without_claim(old, excl, WANTWAKEUP) | WANTEXWAKEUP;
            match self
                .state
                .compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break new,
                Err(now) => old = now,
            }
        };
        s.platform().wake_all(&self.state);
        self.after_claim(s, old, st);
        if drainable(st) {
            // What was deferred until now; more arriving meanwhile waits for the re-entry.
            let queued = self.lists.lock().msgs.len();
            self.drain_some(s, queued, false);
            return true;
        }
        false
    }

    /// Sleeps until a thread leaves put/srv/callback (WANTEXWAKEUP cleared) or `stop()`.
    pub(crate) fn qwait_sleep(&self, s: &Streams, stop: &dyn Fn() -> bool) {
        loop {
            let st = self.load();
            if st & WANTEXWAKEUP == 0 || stop() {
                return;
            }
            s.platform().wait(s, &self.state, st);
        }
    }
}

const O_BUSY: u32 = 1;
const O_EVENTS: u32 = 2;
const O_WANT: u32 = 4;
/// A background writer found BUSY taken: whoever releases it queues the writer again.
/// While set it counts as pending work (for quiesce).
const O_RERUN: u32 = 8;

/// An outer perimeter: a readers/writer gate around every instance of a module.
pub(crate) struct Outer {
    state: AtomicU32,
    inners: Mutex<Vec<Arc<Syncq>>>,
    events: Mutex<VecDeque<Event>>,
}

impl Outer {
    pub(crate) fn new() -> Outer {
        Outer {
            state: AtomicU32::new(0),
            inners: Mutex::new(Vec::new()),
            events: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds an instance's inner syncq; it stays away at once if a writer is pending.
    pub(crate) fn add_inner(self: &Arc<Self>, sq: &Arc<Syncq>) {
        *sq.outer.lock() = Some(Arc::downgrade(self));
        let mut inners = self.inners.lock();
        if self.state.load(Ordering::SeqCst) & (O_BUSY | O_EVENTS) != 0 {
            sq.set_flags(WRITER);
        }
        if !inners.iter().any(|i| Arc::ptr_eq(i, sq)) {
            inners.push(sq.clone());
        }
    }

    /// Removes an instance's inner syncq.
    pub(crate) fn remove_inner(&self, sq: &Arc<Syncq>) {
        self.inners.lock().retain(|i| !Arc::ptr_eq(i, sq));
    }

    fn inners(&self) -> Vec<Arc<Syncq>> {
        self.inners.lock().clone()
    }

    fn sleep(&self, s: &Streams, st: u32) {
        let want = st | O_WANT;
        if st == want
            || self
                .state
                .compare_exchange(st, want, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            s.platform().wait(s, &self.state, want);
        }
    }

    /// Acquires the outer exclusively (open/close with D_MTOCEXCL, qwait's return), waiting
    /// while a writer holds it or events are queued, then for every instance to be idle.
    /// `held` lists the inner claims the caller holds itself.
    pub(crate) fn enter_excl(&self, s: &Streams, held: &[(&Syncq, u32)]) {
        loop {
            let st = self.state.load(Ordering::SeqCst);
            if st & (O_BUSY | O_EVENTS) == 0 {
                if self
                    .state
                    .compare_exchange(st, st | O_BUSY, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            self.sleep(s, st);
        }
        self.wait_inners(s, held);
    }

    fn wait_inners(&self, s: &Streams, held: &[(&Syncq, u32)]) {
        let inners = self.inners();
        for sq in &inners {
            sq.set_flags(WRITER);
        }
        for sq in &inners {
            let mine = held
                .iter()
                .find(|(h, _)| core::ptr::eq(*h, &**sq))
                .map_or(0, |(_, n)| *n);
            sq.wait_count(s, mine);
        }
    }

    /// Releases an exclusive hold. With `run_events`, first runs the queued outer events,
    /// each inside its target's inner perimeter. Then, under the inners lock (which callers
    /// queueing an event also take), either some event is still queued, and the WRITER marks
    /// stay for the background writer, or none is, and WRITER is cleared on every inner. The
    /// outer is released and its waiters woken under that lock too; every inner is drained
    /// after it.
    pub(crate) fn exit(self: &Arc<Self>, s: &Streams, run_events: bool) {
        loop {
            if run_events {
                self.run_events(s);
            }
            let inners = self.inners.lock();
            let pending = self.state.load(Ordering::SeqCst) & O_EVENTS != 0;
            if pending && run_events {
                continue; // queued while we ran the others: run it too
            }
            if !pending {
                for sq in inners.iter() {
                    sq.clear_flags_nodrain(s, WRITER);
                }
            }
            let old = self.release(s);
            let list = inners.clone();
            drop(inners);
            if pending {
                // The background writer runs them, holding no claim of its own.
                s.schedule_outer(self.clone());
            } else {
                for sq in &list {
                    sq.kick_drain(s);
                }
            }
            if old & O_RERUN != 0 {
                // A writer that came meanwhile found nothing left, or is queued above.
                s.task_unparked();
            }
            return;
        }
    }

    /// Runs the queued outer events, FIFO.
    fn run_events(&self, s: &Streams) {
        loop {
            let ev = {
                let mut evs = self.events.lock();
                let ev = evs.pop_front();
                if evs.is_empty() {
                    self.state.fetch_and(!O_EVENTS, Ordering::SeqCst);
                }
                ev
            };
            match ev {
                Some(ev) => Self::run_event(s, ev),
                None => return,
            }
        }
    }

    /// Runs a queued outer event inside its target's inner perimeter, unless the target
    /// is closing (then its message is freed).
    fn run_event(s: &Streams, ev: Event) {
        let sq = ev.to.pair.syncq(ev.to.side).clone();
        sq.enter_under_outer(s, true);
        if ev.to.flags() & QWCLOSE != 0 {
            drop(ev);
        } else {
            ev.run();
        }
        sq.leave(s, true, true);
    }

    /// qwriter(PERIM_OUTER) from a thread holding `held` claims on `caller` (its inner).
    /// Runs `ev` before returning when every other instance is idle, else queues it for a
    /// background writer; either way no put or srv enters any instance until it has run.
    /// The caller never waits here while it holds its claim.
    pub(crate) fn qwriter(
        self: &Arc<Self>,
        s: &Streams,
        caller: &Syncq,
        held: u32,
        ev: Event,
    ) -> bool {
        let st = self.state.load(Ordering::SeqCst);
        if st & (O_BUSY | O_EVENTS) == 0
            && self
                .state
                .compare_exchange(st, st | O_BUSY, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let inners = self.inners();
            for sq in &inners {
                sq.set_flags(WRITER);
            }
            let idle = inners.iter().all(|sq| {
                let mine = if core::ptr::eq(&**sq, caller) {
                    held
                } else {
                    0
                };
                sq.count() <= mine
            });
            if idle {
                ev.run();
                // Events others queued meanwhile are left to the background writer.
                self.exit(s, false);
                return true;
            }
            self.queue_event(ev);
            let old = self.release(s);
            s.schedule_outer(self.clone());
            if old & O_RERUN != 0 {
                s.task_unparked();
            }
            return false;
        }
        // Under the inners lock, so that a holder's exit cannot clear this WRITER mark after
        // it looked for queued events.
        let inners = self.inners.lock();
        caller.set_flags(WRITER);
        self.queue_event(ev);
        drop(inners);
        s.schedule_outer(self.clone());
        false
    }

    /// Releases BUSY (and RERUN, which the caller answers) and wakes its waiters: the old
    /// word.
    fn release(&self, s: &Streams) -> u32 {
        let old = self
            .state
            .fetch_and(!(O_BUSY | O_WANT | O_RERUN), Ordering::SeqCst);
        if old & O_WANT != 0 {
            s.platform().wake_all(&self.state);
        }
        old
    }

    fn queue_event(&self, ev: Event) {
        let mut evs = self.events.lock();
        evs.push_back(ev);
        self.state.fetch_or(O_EVENTS, Ordering::SeqCst);
    }

    /// The background writer: runs the queued events if it can take the outer now and
    /// every instance is idle; otherwise it arranges to be queued again (see the module
    /// comment) and returns. It never blocks, since it may run on the stack of a thread
    /// that holds what it would wait for.
    pub(crate) fn run_queued(self: &Arc<Self>, s: &Streams) {
        let mut st = self.state.load(Ordering::SeqCst);
        loop {
            if st & O_EVENTS == 0 {
                return;
            }
            let new = if st & O_BUSY != 0 {
                st | O_RERUN
            } else {
                st | O_BUSY
            };
            match self
                .state
                .compare_exchange(st, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) if st & O_BUSY != 0 => {
                    if st & O_RERUN == 0 {
                        s.task_parked();
                    }
                    return;
                }
                Ok(_) => break,
                Err(now) => st = now,
            }
        }
        let inners = self.inners();
        for sq in &inners {
            sq.set_flags(WRITER);
        }
        if inners.iter().any(|sq| sq.park_writer(s)) {
            // Events stay queued, so the WRITER marks stay too.
            let old = self.release(s);
            if old & O_RERUN != 0 {
                s.schedule_outer(self.clone());
                s.task_unparked();
            }
            return;
        }
        self.exit(s, true);
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::*;
    use crate::{HostPlatform, StreamsConfig};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn exclusive_entries_and_qwait_never_overlap() {
        let s = HostPlatform::streams(StreamsConfig::default());
        let sq = Arc::new(Syncq::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|t| {
            for kind in 0..3 {
                let (s, sq, inside, bad) = (s.clone(), sq.clone(), inside.clone(), bad.clone());
                t.spawn(move || {
                    let check = || {
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    };
                    for _ in 0..20_000 {
                        sq.enter(&s, true, &|| false);
                        check();
                        if kind == 2 {
                            if !sq.qwait_release(&s, true) {
                                sq.qwait_sleep(&s, &|| true);
                            }
                            sq.enter(&s, true, &|| false);
                            check();
                        }
                        sq.leave(&s, true, true);
                    }
                });
            }
        });
        assert_eq!(bad.load(Ordering::SeqCst), 0);
        assert_eq!(sq.load() & COUNT_MASK, 0);
    }
}
