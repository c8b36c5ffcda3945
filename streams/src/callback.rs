//! qtimeout/quntimeout and qbufcall/qunbufcall: callbacks that run inside a queue's
//! perimeters, and their cancellation; [`Signal`], the interrupt that qwait_sig observes.

use crate::error::Error;
use crate::pair::QueuePair;
use crate::perimeter::Syncq;
use crate::platform::Ticks;
use crate::queue::{Entry, Q, QueueRef};
use crate::sched::{Streams, Task};
use crate::sync::{Arc, AtomicBool, AtomicU32, Mutex, Ordering};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// The id of a qtimeout or qbufcall request (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallbackId(pub u64);

/// Where a qtimeout/qbufcall request stands (a test hook: [`crate::Streams::callback_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CbState {
    /// Registered: the timer has not expired / the bufcall not fired.
    Pending = 0,
    /// Handed to background work; may be waiting at the perimeter.
    Fired = 1,
    /// The function is running.
    Running = 2,
    /// The function ran.
    Done = 3,
    /// Cancelled before it ran.
    Cancelled = 4,
}

type CbFn = Box<dyn FnOnce(Q<'_>) + Send>;

/// A callback request.
pub(crate) struct CbRec {
    pub(crate) id: u64,
    target: QueueRef,
    func: Mutex<Option<CbFn>>,
    state: AtomicU32,
    pub(crate) deadline: Ticks,
    pub(crate) size: usize,
    bufcall: bool,
}

impl CbRec {
    fn state(&self) -> u32 {
        self.state.load(Ordering::SeqCst)
    }

    pub(crate) fn state_is(&self, s: CbState) -> bool {
        self.state() == s as u32
    }

    pub(crate) fn transition(&self, from: CbState, to: CbState) -> bool {
        self.state
            .compare_exchange(from as u32, to as u32, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Ends the request: forget it and wake anyone waiting for it.
    fn retire(&self, s: &Streams, state: CbState) {
        self.state.store(state as u32, Ordering::SeqCst);
        s.platform().wake_all(&self.state);
        s.0.callbacks.lock().remove(&self.id);
        self.target.pair.outstanding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Background work: enter the perimeter as a callback (giving up if cancelled while
    /// waiting), run, leave.
    pub(crate) fn run(self: &Arc<Self>, s: &Streams) {
        let pair = &self.target.pair;
        let sq = pair.syncq(self.target.side);
        let excl = !pair.def.cb_shared();
        if self.state() == CbState::Cancelled as u32 {
            return; // the canceller retired it
        }
        if !sq.enter_task(s, excl, || Task::Callback(self.clone())) {
            return; // parked: runs again when it can enter (or finds itself cancelled)
        }
        if !self.transition(CbState::Fired, CbState::Running) {
            sq.leave(s, excl, true);
            return;
        }
        let f = self.func.lock().take();
        if let Some(f) = f {
            f(Q {
                q: &self.target,
                held: self.target.side,
                cb: self.id,
                entry: Entry::Callback(self.id),
                excl,
            });
        }
        // Retire before leaving, so that whoever the leave wakes (a qwait in open or close)
        // sees no outstanding request.
        self.retire(s, CbState::Done);
        sq.leave(s, excl, true);
    }

    /// Cancels the request. Returns the remaining ticks if it had not fired, 0 if it was
    /// bypassed at the perimeter, -1 if it had finished (or was running and has now finished).
    fn cancel(&self, s: &Streams, inside: u64) -> i64 {
        loop {
            match self.state() {
                x if x == CbState::Pending as u32 => {
                    let removed = if self.bufcall {
                        s.remove_bufcall(self)
                    } else {
                        s.remove_timer(self).is_some()
                    };
                    if removed && self.transition(CbState::Pending, CbState::Cancelled) {
                        self.retire(s, CbState::Cancelled);
                        return self.deadline.saturating_sub(s.now()) as i64;
                    }
                }
                x if x == CbState::Fired as u32 => {
                    if self.transition(CbState::Fired, CbState::Cancelled) {
                        self.retire(s, CbState::Cancelled);
                        self.target.pair.syncq(self.target.side).wake(s);
                        return 0;
                    }
                }
                x if x == CbState::Running as u32 => {
                    if inside == self.id {
                        return -1; // from inside the callback itself: do not wait
                    }
                    s.platform().wait(s, &self.state, x);
                }
                _ => return -1,
            }
        }
    }
}

/// Cancels every outstanding request on `pair` (a close that forgot to).
pub(crate) fn cancel_all(pair: &QueuePair, inside: u64) {
    let s = &pair.streams;
    let mine: Vec<Arc<CbRec>> =
        s.0.callbacks
            .lock()
            .values()
            .filter(|r| core::ptr::eq(&*r.target.pair, pair))
            .cloned()
            .collect();
    for rec in mine {
        rec.cancel(s, inside);
    }
}

impl Streams {
    /// Where the request `id` stands; `None` once it has finished or was cancelled.
    pub fn callback_state(&self, id: CallbackId) -> Option<CbState> {
        let rec = find(self, id)?;
        Some(match rec.state() {
            0 => CbState::Pending,
            1 => CbState::Fired,
            2 => CbState::Running,
            3 => CbState::Done,
            _ => CbState::Cancelled,
        })
    }
}

fn find(s: &Streams, id: CallbackId) -> Option<Arc<CbRec>> {
    s.0.callbacks.lock().get(&id.0).cloned()
}

impl Q<'_> {
    fn register(
        &self,
        call: &'static str,
        f: CbFn,
        deadline: Ticks,
        size: usize,
        bufcall: bool,
    ) -> Result<Arc<CbRec>, Error> {
        let pair = self.q.pair();
        if !pair.is_linked() {
            return Err(Error::NotLinked(call));
        }
        let s = &pair.streams;
        let rec = Arc::new(CbRec {
            id: s.next_id(),
            target: self.to_ref(),
            func: Mutex::new(Some(f)),
            state: AtomicU32::new(CbState::Pending as u32),
            deadline,
            size,
            bufcall,
        });
        pair.outstanding.fetch_add(1, Ordering::SeqCst);
        s.0.callbacks.lock().insert(rec.id, rec.clone());
        Ok(rec)
    }

    /// Runs `f` inside this queue's perimeters after about `ticks` ticks (`qtimeout`).
    /// Needs qprocson first.
    pub fn qtimeout(
        &self,
        ticks: Ticks,
        f: impl FnOnce(Q<'_>) + Send + 'static,
    ) -> Result<CallbackId, Error> {
        let s = self.q.streams();
        let rec = self.register("qtimeout", Box::new(f), s.now() + ticks, 0, false)?;
        let id = CallbackId(rec.id);
        s.add_timer(rec);
        Ok(id)
    }

    /// Cancels a qtimeout (`quntimeout`): the remaining ticks (≥ 0) if it had not run, 0 if
    /// it was waiting at the perimeter (it will not run), -1 if it already ran. Waits for a
    /// running callback, except from inside that callback.
    pub fn quntimeout(&self, id: CallbackId) -> i64 {
        let s = self.q.streams();
        find(s, id).map_or(-1, |rec| rec.cancel(s, self.cb))
    }

    /// Runs `f` inside this queue's perimeters when a buffer of `size` bytes is likely
    /// available (`qbufcall`). Fails with [`Error::NoBuffer`] (the DDI's 0) when the request
    /// cannot be registered; `f` is then never called.
    pub fn qbufcall(
        &self,
        size: usize,
        f: impl FnOnce(Q<'_>) + Send + 'static,
    ) -> Result<CallbackId, Error> {
        let s = self.q.streams();
        let rec = self.register("qbufcall", Box::new(f), 0, size, true)?;
        let id = CallbackId(rec.id);
        if !s.add_bufcall(rec.clone()) {
            rec.retire(s, CbState::Cancelled);
            return Err(Error::NoBuffer);
        }
        Ok(id)
    }

    /// Cancels a qbufcall (`qunbufcall`); waits for a running callback except from inside
    /// it; unknown ids are ignored.
    pub fn qunbufcall(&self, id: CallbackId) {
        let s = self.q.streams();
        if let Some(rec) = find(s, id) {
            rec.cancel(s, self.cb);
        }
    }
}

/// An interrupt for [`Q::qwait_sig`]: the stand-in for a signal to the waiting thread.
#[derive(Clone, Default)]
pub struct Signal(Arc<SignalInner>);

#[derive(Default)]
struct SignalInner {
    raised: AtomicBool,
    waiting: Mutex<Option<(Arc<Syncq>, Streams)>>,
}

impl Signal {
    /// A signal that has not been raised.
    pub fn new() -> Signal {
        Signal::default()
    }
    /// Raises the signal, waking a qwait_sig that observes it.
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
        if let Some((sq, s)) = &*self.0.waiting.lock() {
            sq.wake(s);
        }
    }
    /// Whether the signal is raised.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }
    pub(crate) fn take(&self) -> bool {
        self.0.raised.swap(false, Ordering::SeqCst)
    }
    pub(crate) fn attach(&self, sq: &Arc<Syncq>, s: &Streams) {
        *self.0.waiting.lock() = Some((sq.clone(), s.clone()));
    }
    pub(crate) fn detach(&self) {
        *self.0.waiting.lock() = None;
    }
}
