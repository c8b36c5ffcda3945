//! A stream's plumbing: its pairs in order, and the protocol that changes their links
//! (block every perimeter, wait for walkers, relink, hand on the puts parked meanwhile).

use crate::error::Error;
use crate::head::HeadState;
use crate::module::{Dev, ModuleDef, OpenHow};
use crate::msg::Mblk;
use crate::pair::{QueuePair, StreamShared};
use crate::perimeter::Syncq;
use crate::queue::{Entry, FLUSHALL, Q, QWCLOSE, Queue, QueueRef, link};
use crate::sched::Streams;
use crate::sync::{Arc, Mutex, Ordering, fence};
use alloc::vec::Vec;

/// A stream: a head at the top, a driver at the bottom, modules between.
pub(crate) struct StreamInner {
    pub(crate) streams: Streams,
    /// Head first, driver last; includes pairs not (or no longer) linked.
    pub(crate) pairs: Mutex<Vec<Arc<QueuePair>>>,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) head: Arc<HeadState>,
    /// The device number the stream was opened on (every instance's factory gets it).
    pub(crate) dev: Dev,
}

impl StreamInner {
    pub(crate) fn pairs(&self) -> Vec<Arc<QueuePair>> {
        self.pairs.lock().clone()
    }

    /// Sets BLOCKED on every syncq of the stream, waits until only the caller's own
    /// claims remain, then waits for walkers to leave. Returns the syncqs to unblock.
    pub(crate) fn block(&self, held: &[(&Syncq, u32)]) -> Vec<Arc<Syncq>> {
        let mut sqs: Vec<Arc<Syncq>> = Vec::new();
        for p in self.pairs() {
            for sq in p.distinct_syncqs() {
                if !sqs.iter().any(|s| Arc::ptr_eq(s, &sq)) {
                    sqs.push(sq);
                }
            }
        }
        for sq in &sqs {
            sq.block();
        }
        for (sq, n) in held {
            sq.plumber_claims(&self.streams, *n as i32);
        }
        for sq in &sqs {
            sq.wait_plumbing(&self.streams);
        }
        self.shared.plumbing.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst); // see `StreamInner::put_from_outside`
        self.wait_walkers();
        sqs
    }

    fn wait_walkers(&self) {
        loop {
            let w = self.shared.walkers.load(Ordering::SeqCst);
            if w == 0 {
                return;
            }
            self.streams
                .platform()
                .wait(&self.streams, &self.shared.walkers, w);
        }
    }

    pub(crate) fn unblock(&self, sqs: &[Arc<Syncq>], held: &[(&Syncq, u32)]) {
        for (sq, n) in held {
            sq.plumber_claims(&self.streams, -(*n as i32));
        }
        for sq in sqs {
            sq.unblock_nodrain(&self.streams);
        }
        self.shared.plumbing.store(2, Ordering::SeqCst);
        self.streams.platform().wake_all(&self.shared.plumbing);
        // Hand on the parked puts, in order; puts arriving meanwhile park behind them, so
        // that no source's later message overtakes its parked one.
        loop {
            let batch = {
                let mut parked = self.shared.parked.lock();
                if parked.is_empty() {
                    self.shared.plumbing.store(0, Ordering::SeqCst);
                    break;
                }
                core::mem::take(&mut *parked)
            };
            for (q, mp, next) in batch {
                // A queue removed meanwhile frees the message, as put after qprocsoff would.
                let _ = Self::deliver_outside(&q, mp, next);
            }
        }
        self.streams.platform().wake_all(&self.shared.plumbing);
    }

    /// `put(9F)` (or, with `next`, `putnext`) from outside an entry point: delivered now, or
    /// parked while the stream is being re-plumbed and handed on when that ends. Never blocks.
    pub(crate) fn put_from_outside(
        shared: &StreamShared,
        q: &QueueRef,
        mp: Mblk,
        next: bool,
    ) -> Result<(), Error> {
        shared.walkers.fetch_add(1, Ordering::SeqCst);
        // A walker's count and the plumbing word form a store-load pair (Dekker): each
        // side writes its own word, then reads the other's. The fence orders them in any
        // memory model, loom's (which treats SeqCst accesses as acquire/release) included.
        fence(Ordering::SeqCst);
        if shared.plumbing.load(Ordering::SeqCst) == 0 {
            let r = Self::deliver_outside(q, mp, next);
            shared.walkers.fetch_sub(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if shared.plumbing.load(Ordering::SeqCst) != 0 {
                q.pair.streams.platform().wake_all(&shared.walkers);
            }
            return r;
        }
        shared.walkers.fetch_sub(1, Ordering::SeqCst);
        q.pair.streams.platform().wake_all(&shared.walkers);
        let mut parked = shared.parked.lock();
        if shared.plumbing.load(Ordering::SeqCst) != 0 {
            parked.push((q.clone(), mp, next));
            return Ok(());
        }
        drop(parked);
        // The change ended in between: links are stable again.
        Self::put_from_outside(shared, q, mp, next)
    }

    /// Delivers for a thread that may follow the links (a walker, or the plumbing thread).
    fn deliver_outside(q: &QueueRef, mp: Mblk, next: bool) -> Result<(), Error> {
        if !next {
            return q.pair.put_own(q, mp);
        }
        if !q.pair.is_linked() {
            return Err(Error::NotLinked("putnext"));
        }
        if let Some(n) = link(q.next.load(Ordering::Acquire)) {
            n.pair().deliver_put(n, mp);
        }
        Ok(())
    }

    /// Rewrites q_next, q_prev, q_nfsrv and QEND for the linked pairs, head to driver.
    pub(crate) fn relink(&self) {
        let linked: Vec<Arc<QueuePair>> =
            self.pairs().into_iter().filter(|p| p.is_linked()).collect();
        let ptr = |q: &Queue| q as *const Queue as *mut Queue;
        let null = core::ptr::null_mut();
        let n = linked.len();
        for (i, p) in linked.iter().enumerate() {
            let below = linked.get(i + 1);
            let above = i.checked_sub(1).map(|j| &linked[j]);
            p.wq.next
                .store(below.map_or(null, |b| ptr(&b.wq)), Ordering::SeqCst);
            p.wq.prev
                .store(above.map_or(null, |a| ptr(&a.wq)), Ordering::SeqCst);
            p.rq.next
                .store(above.map_or(null, |a| ptr(&a.rq)), Ordering::SeqCst);
            p.rq.prev
                .store(below.map_or(null, |b| ptr(&b.rq)), Ordering::SeqCst);
        }
        // q_nfsrv: itself if it has a srv, else the next one forward's, else the end.
        let mut fw: *mut Queue = null;
        for (i, p) in linked.iter().enumerate().rev() {
            if i == n - 1 || p.wq.has_srv {
                fw = ptr(&p.wq);
            }
            p.wq.nfsrv.store(fw, Ordering::SeqCst);
        }
        let mut fr: *mut Queue = null;
        for (i, p) in linked.iter().enumerate() {
            if i == 0 || p.rq.has_srv {
                fr = ptr(&p.rq);
            }
            p.rq.nfsrv.store(fr, Ordering::SeqCst);
        }
        for (i, p) in linked.iter().enumerate() {
            let end = crate::queue::QEND;
            if i == n - 1 {
                p.wq.flags.fetch_or(end, Ordering::SeqCst)
            } else {
                p.wq.flags.fetch_and(!end, Ordering::SeqCst)
            };
            if i == 0 {
                p.rq.flags.fetch_or(end, Ordering::SeqCst)
            } else {
                p.rq.flags.fetch_and(!end, Ordering::SeqCst)
            };
        }
    }

    /// Creates, inserts and opens an instance of `def` at `pos` (1 = just below the head).
    pub(crate) fn attach(
        self: &Arc<Self>,
        def: &Arc<ModuleDef>,
        pos: usize,
        how: OpenHow,
    ) -> Result<Arc<QueuePair>, Error> {
        let pair = QueuePair::new(&self.streams, def.clone(), self);
        {
            let mut pairs = self.pairs.lock();
            let pos = pos.min(pairs.len());
            pairs.insert(pos, pair.clone());
        }
        if let Some(outer) = &def.outer {
            for sq in pair.distinct_syncqs() {
                outer.add_inner(&sq);
            }
        }
        let excl = pair.enter_openclose();
        let r = pair.module.open(Q::new(&pair.rq, Entry::Open, excl), how);
        let r = match r {
            Ok(()) if !pair.is_linked() => Err(Error::OpenWithoutQprocson(def.name)),
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Errno(e)),
        };
        if r.is_err() && pair.is_linked() {
            let _ = Q::new(&pair.rq, Entry::Close, excl).qprocsoff();
        }
        pair.leave_openclose(excl);
        match r {
            Ok(()) => Ok(pair),
            Err(e) => {
                self.forget(&pair);
                Err(e)
            }
        }
    }

    /// Closes an instance and removes it (`qdetach`).
    pub(crate) fn detach(&self, pair: &Arc<QueuePair>) -> Result<(), Error> {
        let excl = pair.enter_openclose();
        pair.module.close(Q::new(&pair.rq, Entry::Close, excl));
        let mut r = Ok(());
        if pair.rq.flags() & QWCLOSE == 0 {
            let _ = Q::new(&pair.rq, Entry::Close, excl).qprocsoff();
            r = Err(Error::CloseWithoutQprocsoff(pair.def.name));
        }
        pair.leave_openclose(excl);
        pair.wait_service(&pair.rq);
        pair.wait_service(&pair.wq);
        pair.rq.flushq(FLUSHALL);
        pair.wq.flushq(FLUSHALL);
        self.forget(pair);
        r
    }

    fn forget(&self, pair: &Arc<QueuePair>) {
        {
            self.pairs.lock().retain(|p| !Arc::ptr_eq(p, pair));
        }
        if let Some(outer) = &pair.def.outer {
            for sq in pair.distinct_syncqs() {
                outer.remove_inner(&sq);
            }
        }
    }
}
