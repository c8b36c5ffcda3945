//! The public [`Stream`]: open, push, insert, pop and close, and the head's side of reading
//! and writing.

use crate::error::{Errno, Error};
use crate::head::{HeadModule, HeadState, ReadResult};
use crate::module::{D_MP, D_MTQPAIR, Dev, ModuleDef, OpenHow};
use crate::msg::Mblk;
use crate::pair::{QueuePair, StreamShared};
use crate::plumb::StreamInner;
use crate::queue::{Entry, FLUSHALL, Q, Queue, QueueRef, Side, link};
use crate::sched::Streams;
use crate::sync::{Arc, AtomicU32, Mutex, OpLock, Ordering};
use alloc::vec::Vec;

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
