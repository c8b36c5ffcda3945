//! A module or driver instance (a queue pair): its two queues and perimeters, the put path
//! into it, service runs, and the walks that follow its links from outside an entry point.

use crate::error::Error;
use crate::module::{Inner, ModuleDef};
use crate::msg::Mblk;
use crate::perimeter::Syncq;
use crate::plumb::StreamInner;
use crate::queue::{Entry, Q, QENAB, QINSERVICE, QWAITSVC, QWCLOSE, Queue, QueueRef, Side};
use crate::sched::{Streams, Task};
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, OpLock, Ordering, Weak, fence};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Per-stream counters shared by its pairs.
pub(crate) struct StreamShared {
    /// Threads reading links from outside any entry point.
    pub(crate) walkers: AtomicU32,
    /// 1 while a plumbing change rewrites links: new walkers wait, the change waits for the
    /// walkers already in (a Dekker handshake with `walkers`). 2 while the change hands on
    /// the puts that arrived meanwhile.
    pub(crate) plumbing: AtomicU32,
    /// Puts from outside any entry point that arrived during a plumbing change: parked
    /// rather than waited for, so that `QueueRef::put` never blocks; delivered in order
    /// when the change ends.
    pub(crate) parked: Mutex<Vec<(QueueRef, Mblk, bool)>>,
    /// Serialises push, pop, insert and close on this stream (`STRPLUMB`).
    pub(crate) ops: OpLock<()>,
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
    pub(crate) rq: Queue,
    pub(crate) wq: Queue,
    pub(crate) def: Arc<ModuleDef>,
    pub(crate) module: Box<dyn crate::module::Module>,
    pub(crate) streams: Streams,
    sqs: [Arc<Syncq>; 2],
    pub(crate) linked: AtomicBool,
    /// qtimeout/qbufcall requests registered and not yet finished or cancelled.
    pub(crate) outstanding: AtomicUsize,
    me: Weak<QueuePair>,
    pub(crate) stream: Weak<StreamInner>,
    shared: Arc<StreamShared>,
}

impl QueuePair {
    pub(crate) fn new(
        streams: &Streams,
        def: Arc<ModuleDef>,
        stream: &Arc<StreamInner>,
    ) -> Arc<QueuePair> {
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

    pub(crate) fn distinct_syncqs(&self) -> Vec<Arc<Syncq>> {
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
    pub(crate) fn wait_service(&self, q: &Queue) {
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
    pub(crate) fn enter_openclose(&self) -> bool {
        let sq = self.syncq(Side::Read);
        let excl = !self.def.oc_shared();
        self.enter_inner_and_outer(sq, excl);
        excl
    }

    /// The entry of open, close and qwait's return: the outer first when it is held
    /// exclusively, then the inner.
    pub(crate) fn enter_inner_and_outer(&self, sq: &Syncq, excl: bool) {
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

    pub(crate) fn leave_openclose(&self, excl: bool) {
        self.syncq(Side::Read).leave(&self.streams, excl, true);
        if let (true, Some(outer)) = (self.def.oc_excl_outer(), &self.def.outer) {
            outer.exit(&self.streams, true);
        }
    }
}
