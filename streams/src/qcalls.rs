//! What a routine calls on its queue handle [`Q`] about its own instance: qprocson and
//! qprocsoff (linking the pair into message flow and out again), qwriter and qwait.

use crate::callback::Signal;
use crate::error::Error;
use crate::msg::Mblk;
use crate::perimeter::Event;
use crate::queue::{Entry, Perim, Q, QWANTW, QWCLOSE, Queue, QueueRef, Side, link};
use crate::sync::{Arc, Ordering};
use alloc::boxed::Box;
use alloc::vec::Vec;

impl<'a> Q<'a> {
    fn require(&self, call: &'static str, allowed: &[fn(Entry) -> bool]) -> Result<(), Error> {
        if allowed.iter().any(|ok| ok(self.entry)) {
            Ok(())
        } else {
            Err(Error::WrongContext {
                call,
                context: self.entry.name(),
            })
        }
    }

    fn held(&self) -> u32 {
        1
    }

    /// qwriter and qwait act on this queue's inner perimeter, which the thread must hold:
    /// not so for the other queue of a D_MTPERQ pair.
    fn require_held(&self, call: &'static str) -> Result<(), Error> {
        let pair = self.q.pair();
        if Arc::ptr_eq(pair.syncq(self.q.side()), pair.syncq(self.held)) {
            Ok(())
        } else {
            Err(Error::WrongContext {
                call,
                context: "the other queue of a D_MTPERQ pair (its perimeter is not held)",
            })
        }
    }

    /// Links the instance into message flow (`qprocson`); open must call it before
    /// returning and before put, putnext, qbufcall, qtimeout or qwait. A no-op if linked.
    pub fn qprocson(&self) -> Result<(), Error> {
        self.require("qprocson", &[|e| e == Entry::Open])?;
        let pair = self.q.pair();
        if pair.is_linked() {
            return Ok(());
        }
        let stream = pair.stream.upgrade().expect("an opening pair has a stream");
        let s = &pair.streams;
        let sqs = {
            let held = [(&**pair.syncq(Side::Read), self.held())];
            let sqs = stream.block(&held);
            pair.linked.store(true, Ordering::SeqCst);
            stream.relink();
            stream.unblock(&sqs, &held);
            sqs
        };
        // A writer that was blocked on the queue below now retries against ours.
        for q in [&pair.wq, &pair.rq] {
            let below = link(q.next.load(Ordering::SeqCst)).filter(|_| q.has_srv);
            if let Some(below) = below {
                let target = link(below.nfsrv.load(Ordering::SeqCst)).unwrap_or(below);
                if target.flags() & QWANTW != 0 {
                    q.backenable_walked(0); // the open's claim keeps the links
                }
            }
        }
        for sq in sqs {
            sq.kick_drain(s);
        }
        Ok(())
    }

    /// Unlinks the instance from message flow (`qprocsoff`): waits for every thread in the
    /// stream's perimeters to leave, moves messages deferred for it to the next queue (a
    /// driver's are freed) and drops its pending qwriter events. A second call is a no-op.
    /// Reports [`Error::CallbacksOutstanding`] (and cancels them) if qtimeout/qbufcall
    /// requests were still outstanding.
    pub fn qprocsoff(&self) -> Result<(), Error> {
        self.require("qprocsoff", &[|e| e == Entry::Close])?;
        let pair = self.q.pair();
        if pair.rq.flags.fetch_or(QWCLOSE, Ordering::SeqCst) & QWCLOSE != 0 {
            return Ok(());
        }
        pair.wq.flags.fetch_or(QWCLOSE, Ordering::SeqCst);
        let outstanding = pair.outstanding.load(Ordering::SeqCst);
        let mut r = Ok(());
        if outstanding > 0 {
            crate::callback::cancel_all(pair, self.cb);
            r = Err(Error::CallbacksOutstanding(outstanding));
        }
        if !pair.is_linked() {
            return r;
        }
        let stream = pair.stream.upgrade().expect("a closing pair has a stream");
        let s = &pair.streams;
        let (sqs, targets) = {
            let held = [(&**pair.syncq(Side::Read), self.held())];
            let sqs = stream.block(&held);
            // A request registered by a thread that was still inside when close began.
            let late = pair.outstanding.load(Ordering::SeqCst);
            if late > 0 {
                crate::callback::cancel_all(pair, self.cb);
                r = r.and(Err(Error::CallbacksOutstanding(late)));
            }
            let next_of = |q: &Queue| {
                link(q.next.load(Ordering::SeqCst)).map(|n| n.pair().self_ref(n.side()))
            };
            let (wnext, rnext) = (next_of(&pair.wq), next_of(&pair.rq));
            pair.linked.store(false, Ordering::SeqCst);
            stream.relink();
            let mut targets = Vec::new();
            for sq in pair.distinct_syncqs() {
                let (msgs, events) = sq.take_for(|q| core::ptr::eq(&*q.pair, pair));
                drop(events);
                // Each side's messages go on to the queue that now follows it (a driver's
                // write side has none: they are freed), in order.
                let mut moved: [Vec<(QueueRef, Mblk)>; 2] = [Vec::new(), Vec::new()];
                let mut taken = [0usize; 2];
                for (q, mp) in msgs {
                    taken[q.side as usize] += 1;
                    let next = if q.side == Side::Write {
                        &wnext
                    } else {
                        &rnext
                    };
                    if let Some(n) = next {
                        moved[q.side as usize].push((n.clone(), mp));
                    }
                }
                for side in [Side::Read, Side::Write] {
                    if taken[side as usize] > 0 {
                        pair.queue(side).deferred_removed(taken[side as usize]);
                    }
                }
                for (list, next) in moved.into_iter().zip([&rnext, &wnext]) {
                    if let (false, Some(n)) = (list.is_empty(), next) {
                        let nsq = n.pair.syncq(n.side).clone();
                        nsq.defer_many(list);
                        targets.push(nsq);
                    }
                }
            }
            for q in [&pair.rq, &pair.wq] {
                q.backenable_waiting_writers();
            }
            // Parked puts to (or putnexts from) this pair go on to the queue that follows
            // it, like its deferred messages.
            for entry in stream.shared.parked.lock().iter_mut() {
                if core::ptr::eq(&*entry.0.pair, pair) {
                    let next = if entry.0.side == Side::Write {
                        &wnext
                    } else {
                        &rnext
                    };
                    if let Some(n) = next {
                        entry.0 = n.clone();
                        entry.2 = false;
                    }
                }
            }
            // Nothing may follow this pair's links any more (a kept QueueRef included).
            for q in [&pair.rq, &pair.wq] {
                for l in [&q.next, &q.prev, &q.nfsrv] {
                    l.store(core::ptr::null_mut(), Ordering::SeqCst);
                }
            }
            stream.unblock(&sqs, &held);
            (sqs, targets)
        };
        for sq in sqs.iter().chain(targets.iter()) {
            sq.kick_drain(s);
        }
        r
    }

    /// Runs `f(q, mp)` with exclusive access at `perim` (`qwriter`): before returning when
    /// that can be had at once, otherwise later, and until then no other message enters
    /// the perimeter. Allowed from put, srv and callbacks. Returns whether `f` already ran.
    pub fn qwriter(
        &self,
        mp: Mblk,
        f: impl FnOnce(Q<'_>, Mblk) + Send + 'static,
        perim: Perim,
    ) -> Result<bool, Error> {
        self.require(
            "qwriter",
            &[
                |e| e == Entry::Put,
                |e| e == Entry::Srv,
                |e| e == Entry::Writer,
                |e| matches!(e, Entry::Callback(_)),
            ],
        )?;
        self.require_held("qwriter")?;
        let pair = self.q.pair();
        let ev = Event {
            cb: self.cb,
            to: self.to_ref(),
            mp,
            func: Box::new(f),
        };
        let sq = pair.syncq(self.q.side());
        match perim {
            Perim::Inner => Ok(sq.qwriter_inner(self.excl, ev)),
            Perim::Outer => {
                let outer = pair.def.outer.as_ref().ok_or(Error::NoOuterPerimeter)?;
                Ok(outer.qwriter(&pair.streams, sq, self.held(), ev))
            }
        }
    }

    /// `qwriter` with the DDI's integer perimeter (1 inner, 2 outer); anything else is refused.
    pub fn qwriter_raw(
        &self,
        mp: Mblk,
        f: impl FnOnce(Q<'_>, Mblk) + Send + 'static,
        perim: u32,
    ) -> Result<bool, Error> {
        let p = match perim {
            1 => Perim::Inner,
            2 => Perim::Outer,
            other => return Err(Error::BadPerimeter(other)),
        };
        self.qwriter(mp, f, p)
    }

    /// Leaves the perimeters, sleeps until a thread leaves put, srv or a callback of this
    /// queue's syncq, and re-enters (`qwait`). Only in open/close, after qprocson.
    /// Wake-ups can be spurious: loop on your own condition.
    pub fn qwait(&self) -> Result<(), Error> {
        self.qwait_inner(None).map(|_| ())
    }

    /// Like [`Q::qwait`], but returns `Ok(false)` when `sig` was raised (`qwait_sig`
    /// returning 0); the perimeters are re-entered either way. Consumes the signal.
    pub fn qwait_sig(&self, sig: &Signal) -> Result<bool, Error> {
        self.qwait_inner(Some(sig))
    }

    fn qwait_inner(&self, sig: Option<&Signal>) -> Result<bool, Error> {
        self.require("qwait", &[|e| e == Entry::Open, |e| e == Entry::Close])?;
        self.require_held("qwait")?;
        let pair = self.q.pair();
        if !pair.is_linked() {
            return Err(Error::NotLinked("qwait"));
        }
        let n = pair.outstanding.load(Ordering::SeqCst);
        if self.entry == Entry::Close && n > 0 {
            return Err(Error::CallbacksOutstanding(n));
        }
        let outer = match &pair.def.outer {
            Some(_) if !pair.def.oc_excl_outer() => return Err(Error::QwaitOuterShared),
            o => o.as_ref(),
        };
        let s = &pair.streams;
        let sq = pair.syncq(self.q.side());
        if let Some(sig) = sig {
            sig.attach(sq, s);
        }
        // Inner first (while the outer holds every instance off nothing drains here), then
        // the outer, whose release drains what was deferred.
        let drained = sq.qwait_release(s, self.excl);
        if let Some(o) = outer {
            o.exit(s, true);
        }
        if !drained {
            sq.qwait_sleep(s, &|| sig.is_some_and(Signal::is_raised));
        }
        let interrupted = sig.is_some_and(|g| g.take());
        if let Some(sig) = sig {
            sig.detach();
        }
        pair.enter_inner_and_outer(sq, self.excl);
        Ok(!interrupted)
    }
}
