//! Streams and queue pairs: open, push, pop and close; qprocson/qprocsoff (linking a pair
//! into message flow and out again); the put path; service runs; qwriter and qwait.

use crate::callback::Signal;
use crate::error::{Errno, Error};
use crate::head::{HeadModule, HeadState, ReadResult};
use crate::module::{D_MP, D_MTQPAIR, Dev, Inner, ModuleDef, OpenHow};
use crate::msg::Mblk;
use crate::perimeter::{Event, Syncq};
use crate::queue::{
    Entry, FLUSHALL, Perim, Q, QENAB, QINSERVICE, QWAITSVC, QWANTW, QWCLOSE, Queue, QueueRef, Side,
    link,
};
use crate::sched::{Streams, Task};
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, OpLock, Ordering, Weak, fence};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Per-stream counters shared by its pairs.
pub(crate) struct StreamShared {
    /// Threads reading links from outside any entry point.
    walkers: AtomicU32,
    /// 1 while a plumbing change rewrites links: new walkers wait, the change waits for the
    /// walkers already in (a Dekker handshake with `walkers`). 2 while the change hands on
    /// the puts that arrived meanwhile.
    plumbing: AtomicU32,
    /// Puts from outside any entry point that arrived during a plumbing change: parked
    /// rather than waited for, so that `QueueRef::put` never blocks; delivered in order
    /// when the change ends.
    parked: Mutex<Vec<(QueueRef, Mblk, bool)>>,
    /// Serialises push, pop, insert and close on this stream (`STRPLUMB`).
    ops: OpLock<()>,
}

/// A walk of a stream's links from outside an entry point; plumbing waits for it.
pub(crate) struct Walk<'a> {
    shared: &'a StreamShared,
    streams: &'a Streams,
}

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        self.shared.walkers.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst); // see `StreamInner::put_from_outside`
        if self.shared.plumbing.load(Ordering::SeqCst) != 0 {
            self.streams.platform().wake_all(&self.shared.walkers);
        }
    }
}

/// A module or driver instance: its two queues, perimeters and state.
pub(crate) struct QueuePair {
    rq: Queue,
    wq: Queue,
    pub(crate) def: Arc<ModuleDef>,
    pub(crate) module: Box<dyn crate::module::Module>,
    pub(crate) streams: Streams,
    sqs: [Arc<Syncq>; 2],
    linked: AtomicBool,
    /// qtimeout/qbufcall requests registered and not yet finished or cancelled.
    pub(crate) outstanding: AtomicUsize,
    me: Weak<QueuePair>,
    stream: Weak<StreamInner>,
    shared: Arc<StreamShared>,
}

impl QueuePair {
    fn new(streams: &Streams, def: Arc<ModuleDef>, stream: &Arc<StreamInner>) -> Arc<QueuePair> {
        let sqs = match def.inner {
            Inner::PerQ => [Arc::new(Syncq::new()), Arc::new(Syncq::new())],
            Inner::QPair => {
                let sq = Arc::new(Syncq::new());
                [sq.clone(), sq]
            }
            Inner::PerMod => {
                let sq = def.permod.clone().expect("PERMOD definitions have a syncq");
                [sq.clone(), sq]
            }
            Inner::None => {
                let sq = Arc::new(Syncq::new());
                [sq.clone(), sq]
            }
        };
        Arc::new_cyclic(|me: &Weak<QueuePair>| QueuePair {
            rq: Queue::new(Side::Read, &def.rinfo, def.rsrv, me.as_ptr()),
            wq: Queue::new(Side::Write, &def.winfo, def.wsrv, me.as_ptr()),
            module: (def.factory)(stream.dev),
            def,
            streams: streams.clone(),
            sqs,
            linked: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            me: me.clone(),
            stream: Arc::downgrade(stream),
            shared: stream.shared.clone(),
        })
    }

    pub(crate) fn queue(&self, side: Side) -> &Queue {
        match side {
            Side::Read => &self.rq,
            Side::Write => &self.wq,
        }
    }

    pub(crate) fn syncq(&self, side: Side) -> &Arc<Syncq> {
        &self.sqs[side as usize]
    }

    fn distinct_syncqs(&self) -> Vec<Arc<Syncq>> {
        if Arc::ptr_eq(&self.sqs[0], &self.sqs[1]) {
            alloc::vec![self.sqs[0].clone()]
        } else {
            self.sqs.to_vec()
        }
    }

    pub(crate) fn self_ref(&self, side: Side) -> QueueRef {
        QueueRef {
            pair: self.me.upgrade().expect("a live pair has an Arc"),
            side,
        }
    }

    pub(crate) fn is_linked(&self) -> bool {
        self.linked.load(Ordering::SeqCst)
    }

    pub(crate) fn shared(&self) -> &StreamShared {
        &self.shared
    }

    /// Starts a walk of the stream's links from outside an entry point.
    /// Waits while a plumbing change is rewriting the links. Walks do not nest: a thread that
    /// walks, or holds a claim, follows links without starting another walk.
    pub(crate) fn walk(&self) -> Walk<'_> {
        loop {
            self.shared.walkers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst); // see `StreamInner::put_from_outside`
            if self.shared.plumbing.load(Ordering::SeqCst) != 1 {
                return Walk {
                    shared: &self.shared,
                    streams: &self.streams,
                };
            }
            self.shared.walkers.fetch_sub(1, Ordering::SeqCst);
            self.streams.platform().wake_all(&self.shared.walkers);
            self.streams
                .platform()
                .wait(&self.streams, &self.shared.plumbing, 1);
        }
    }

    /// The put path (`putnext` into `q`): enter or defer; never blocks.
    pub(crate) fn deliver_put(&self, q: &Queue, mp: Mblk) {
        let sq = &self.sqs[q.side() as usize];
        let excl = !self.def.put_shared();
        if sq.try_enter_put(excl) {
            self.call_put(q, mp, excl);
            sq.leave(&self.streams, excl, true);
        } else {
            sq.defer(&self.streams, self.self_ref(q.side()), mp);
        }
    }

    pub(crate) fn call_put(&self, q: &Queue, mp: Mblk, excl: bool) {
        self.module.put(Q::new(q, Entry::Put, excl), mp);
    }

    /// `put(9F)` on one of this pair's own queues.
    pub(crate) fn put_own(&self, q: &Queue, mp: Mblk) -> Result<(), Error> {
        if !self.is_linked() {
            return Err(Error::NotLinked("put"));
        }
        self.deliver_put(q, mp);
        Ok(())
    }

    /// Runs the service procedure of `q` until it is no longer enabled (`runservice`).
    pub(crate) fn runservice(&self, q: &Queue) {
        let mut f = q.flags.load(Ordering::SeqCst);
        loop {
            let new = (f & !QENAB) | QINSERVICE;
            match q
                .flags
                .compare_exchange(f, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => f = now,
            }
        }
        let sq = self.syncq(q.side());
        let excl = !self.def.srv_shared();
        loop {
            let task = || Task::Service(self.self_ref(q.side()));
            if !sq.enter_task(&self.streams, excl, task) {
                return; // parked (QINSERVICE stays set): runs again when it can enter
            }
            if q.flags() & QWCLOSE == 0 {
                self.module.srv(Q::new(q, Entry::Srv, excl));
            }
            sq.leave(&self.streams, excl, true);
            let mut f = q.flags();
            let again = loop {
                let (new, again) = if f & QENAB != 0 {
                    (f & !QENAB, true)
                } else {
                    (f & !(QINSERVICE | QWAITSVC), false)
                };
                match q
                    .flags
                    .compare_exchange(f, new, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => break again,
                    Err(now) => f = now,
                }
            };
            if !again {
                q.clear_back();
                if f & QWAITSVC != 0 {
                    self.streams.platform().wake_all(&q.flags);
                }
                return;
            }
        }
    }

    /// Waits until no service run of `q` is scheduled or running.
    fn wait_service(&self, q: &Queue) {
        loop {
            let f = q.flags();
            if f & (QENAB | QINSERVICE) == 0 {
                return;
            }
            let want = f | QWAITSVC;
            if q.flags
                .compare_exchange(f, want, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.streams.platform().wait(&self.streams, &q.flags, want);
            }
        }
    }

    /// Enters for open or close: the read queue's inner perimeter; with D_MTOCEXCL the
    /// outer perimeter first, exclusively (outer before inner, so that two such entries
    /// cannot each hold an inner the other waits for).
    fn enter_openclose(&self) -> bool {
        let sq = self.syncq(Side::Read);
        let excl = !self.def.oc_shared();
        self.enter_inner_and_outer(sq, excl);
        excl
    }

    /// The entry of open, close and qwait's return: the outer first when it is held
    /// exclusively, then the inner.
    fn enter_inner_and_outer(&self, sq: &Syncq, excl: bool) {
        match (&self.def.outer, self.def.oc_excl_outer()) {
            (Some(outer), true) => {
                outer.enter_excl(&self.streams, &[]);
                sq.enter_under_outer(&self.streams, excl);
            }
            _ => {
                sq.enter(&self.streams, excl, &|| false);
            }
        }
    }

    fn leave_openclose(&self, excl: bool) {
        self.syncq(Side::Read).leave(&self.streams, excl, true);
        if let (true, Some(outer)) = (self.def.oc_excl_outer(), &self.def.outer) {
            outer.exit(&self.streams, true);
        }
    }
}

/// A stream: a head at the top, a driver at the bottom, modules between.
pub(crate) struct StreamInner {
    streams: Streams,
    /// Head first, driver last; includes pairs not (or no longer) linked.
    pairs: Mutex<Vec<Arc<QueuePair>>>,
    shared: Arc<StreamShared>,
    pub(crate) head: Arc<HeadState>,
    /// The device number the stream was opened on (every instance's factory gets it).
    dev: Dev,
}

impl StreamInner {
    fn pairs(&self) -> Vec<Arc<QueuePair>> {
        self.pairs.lock().clone()
    }

    /// Sets BLOCKED on every syncq of the stream, waits until only the caller's own
    /// claims remain, then waits for walkers to leave. Returns the syncqs to unblock.
    fn block(&self, held: &[(&Syncq, u32)]) -> Vec<Arc<Syncq>> {
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

    fn unblock(&self, sqs: &[Arc<Syncq>], held: &[(&Syncq, u32)]) {
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
    fn relink(&self) {
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
    fn attach(
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
    fn detach(&self, pair: &Arc<QueuePair>) -> Result<(), Error> {
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

/// A stream: a stream head at the top, a driver at the bottom, and modules pushed
/// between them. Dropping it without [`Stream::close`] closes it too.
pub struct Stream {
    inner: Arc<StreamInner>,
    /// The head's pair (it never changes).
    head: Arc<QueuePair>,
    closed: bool,
}

fn head_def(state: Arc<HeadState>) -> Arc<ModuleDef> {
    ModuleDef::builder("strhead")
        .flags(D_MP | D_MTQPAIR)
        .rinfo(crate::module::ModuleInfo {
            hiwat: crate::STRHIGH,
            lowat: crate::STRLOW,
            ..Default::default()
        })
        .winfo(crate::module::ModuleInfo {
            hiwat: 0,
            lowat: 0,
            ..Default::default()
        })
        .srv(false, true)
        .build(move || HeadModule(state.clone()))
        .expect("valid flags")
}

impl Stream {
    /// Opens a stream on a new instance of the driver `driver` (device number 0).
    pub fn open(streams: &Streams, driver: &Arc<ModuleDef>) -> Result<Stream, Error> {
        Stream::open_dev(streams, driver, 0)
    }

    /// Opens a stream on a new instance of the driver `driver` for device `dev`: the
    /// driver's factory (see [`crate::ModuleDefBuilder::build_dev`]), and that of every
    /// module pushed later, gets `dev`, as an illumos open gets its `devp`.
    pub fn open_dev(streams: &Streams, driver: &Arc<ModuleDef>, dev: Dev) -> Result<Stream, Error> {
        let inner = Arc::new(StreamInner {
            dev,
            streams: streams.clone(),
            pairs: Mutex::new(Vec::new()),
            shared: Arc::new(StreamShared {
                walkers: AtomicU32::new(0),
                plumbing: AtomicU32::new(0),
                parked: Mutex::new(Vec::new()),
                ops: OpLock::new(()),
            }),
            head: Arc::new(HeadState::default()),
        });
        let head = QueuePair::new(streams, head_def(inner.head.clone()), &inner);
        head.linked.store(true, Ordering::SeqCst);
        inner.pairs.lock().push(head);
        inner.relink();
        inner.attach(driver, 1, OpenHow::Driver)?;
        let head = inner.pairs.lock()[0].clone();
        Ok(Stream {
            inner,
            head,
            closed: false,
        })
    }

    /// Pushes an instance of `module` just below the stream head (`I_PUSH`).
    pub fn push(&self, module: &Arc<ModuleDef>) -> Result<(), Error> {
        let _ops = self.inner.shared.ops.lock();
        self.inner.attach(module, 1, OpenHow::Module).map(|_| ())
    }

    /// Inserts an instance of `module` at `pos` (1 = just below the head, the number of
    /// modules + 1 = just above the driver).
    pub fn insert(&self, module: &Arc<ModuleDef>, pos: usize) -> Result<(), Error> {
        let _ops = self.inner.shared.ops.lock();
        let max = self.inner.pairs.lock().len() - 1;
        self.inner
            .attach(module, pos.clamp(1, max), OpenHow::Module)
            .map(|_| ())
    }

    /// Closes and removes the topmost module (`I_POP`).
    pub fn pop(&self) -> Result<(), Error> {
        let _ops = self.inner.shared.ops.lock();
        let pairs = self.inner.pairs();
        if pairs.len() <= 2 {
            return Err(Error::NoModule);
        }
        self.inner.detach(&pairs[1])
    }

    /// Number of pushed modules.
    pub fn modules(&self) -> usize {
        self.inner.pairs.lock().len().saturating_sub(2)
    }

    /// Closes every module, top first, then the driver. Returns the first error reported.
    pub fn close(mut self) -> Result<(), Error> {
        self.closed = true;
        self.close_all()
    }

    fn close_all(&self) -> Result<(), Error> {
        let _ops = self.inner.shared.ops.lock();
        let mut first = Ok(());
        loop {
            let pairs = self.inner.pairs();
            if pairs.len() <= 1 {
                break;
            }
            let r = self.inner.detach(&pairs[1]);
            if first.is_ok() {
                first = r;
            }
        }
        // The head's own bufcalls and timeouts die with it (strclose cancels them).
        crate::callback::cancel_all(&self.head, 0);
        // Messages deferred at the head hold the head itself: let them go, then the head.
        drop(self.head.syncq(Side::Read).take_for(|_| true));
        self.head.rq.deferred_forget();
        self.head.wq.deferred_forget();
        self.head.rq.flushq(FLUSHALL);
        self.inner.pairs.lock().clear();
        first
    }

    /// A queue of the stream: `pos` 0 is the head, 1 the topmost module, the last the driver.
    pub fn queue(&self, pos: usize, side: Side) -> Option<QueueRef> {
        self.inner.pairs.lock().get(pos).map(|p| QueueRef {
            pair: p.clone(),
            side,
        })
    }

    /// The driver's queue.
    pub fn driver(&self, side: Side) -> QueueRef {
        let p = self
            .inner
            .pairs
            .lock()
            .last()
            .cloned()
            .expect("a stream has a driver");
        QueueRef { pair: p, side }
    }

    /// Sends a message down the stream from the head, as a write does (no flow-control test).
    pub fn putmsg(&self, mp: Mblk) -> Result<(), Errno> {
        self.inner.head.check_write()?;
        self.head.deliver_put(&self.head.wq, mp);
        Ok(())
    }

    /// Writes `bytes` as one M_DATA message: EIO after a hang-up, the write error after
    /// M_ERROR, EAGAIN while the stream is flow-controlled, ENOMEM without a buffer.
    pub fn write(&self, bytes: &[u8]) -> Result<(), Errno> {
        self.inner.head.check_write()?;
        if !self.canwrite() {
            return Err(Errno::EAGAIN);
        }
        let mut mp = self
            .inner
            .streams
            .allocb(bytes.len())
            .ok_or(Errno::ENOMEM)?;
        mp.write(bytes).expect("sized to fit");
        self.head.deliver_put(&self.head.wq, mp);
        Ok(())
    }

    /// Whether a write would pass flow control now (`canputnext` from the head).
    pub fn canwrite(&self) -> bool {
        let _walk = self.head.walk();
        link(self.head.wq.next.load(Ordering::Acquire)).is_none_or(Queue::canput)
    }

    /// Whether [`Stream::read`] would return at once: a message waits, the stream hung up,
    /// or a read error is set (`poll`'s POLLIN, without taking anything).
    pub fn readable(&self) -> bool {
        !self.head.rq.is_empty()
            || self.inner.head.is_hungup()
            || self.inner.head.errors().0.is_some()
    }

    /// Reads the next message at the head (`getmsg`, non-blocking).
    pub fn read(&self) -> ReadResult {
        // Touches only the head's queue; a back-enable walks the links by itself.
        self.inner.head.read(&self.head.rq)
    }

    /// Runs `f` when a buffer of `size` bytes is likely available (the stream head's
    /// `bufcall`, for a writer whose allocation failed). `f` runs inside the head's perimeter
    /// and must not block. Fails with [`Error::NoBuffer`] when the request cannot be kept.
    pub fn bufcall(
        &self,
        size: usize,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<crate::CallbackId, Error> {
        let q = Q::new(&self.head.wq, Entry::Put, false);
        q.qbufcall(size, move |_| f())
    }

    /// Cancels a [`Stream::bufcall`] that has not run (unknown ids are ignored).
    pub fn unbufcall(&self, id: crate::CallbackId) {
        Q::new(&self.head.wq, Entry::Put, false).qunbufcall(id)
    }

    /// The stream head's state and event log.
    pub fn head(&self) -> &HeadState {
        &self.inner.head
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.close_all();
        }
    }
}
