//! Message blocks: [`Mblk`] over reference-counted data blocks, `b_cont` chains, message
//! types with their priority classes, and the DDI message utilities.
//!
//! A data block is shared by `dupb`; its bytes may be written only through a block that
//! holds the only reference. Freeing is dropping: [`Mblk::freeb`] and [`Mblk::freemsg`]
//! exist for readers of the DDI. The raw-memory part (`esballoc` over a caller's buffer) is
//! the only `unsafe` here.

use crate::error::Error;
use crate::pool::Pool;
use crate::sync::{Arc, Ordering};
use alloc::boxed::Box;
use alloc::vec;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicU8, AtomicUsize};

/// Greatest `db_ref` of a data block; `dupb` fails beyond it.
pub const DBLK_REFMAX: usize = 255;
/// `b_flag`: first byte of a message ("mark").
pub const MSGMARK: u8 = 0x1;
/// `b_flag`: the stream head must not reflect this M_FLUSH again.
pub const MSGNOLOOP: u8 = 0x2;
/// `b_flag`: message is delimited.
pub const MSGDELIM: u8 = 0x4;

/// The routine an esballoc'd buffer runs when its last reference is dropped.
pub type FreeRoutine = Box<dyn FnOnce() + Send>;

/// A message type (`db_type`). Types at or above `QPCTL` (0x80) are high priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgType(pub u8);

#[allow(missing_docs)]
impl MsgType {
    pub const M_DATA: MsgType = MsgType(0x00);
    pub const M_PROTO: MsgType = MsgType(0x01);
    pub const M_BREAK: MsgType = MsgType(0x08);
    pub const M_PASSFP: MsgType = MsgType(0x09);
    pub const M_SIG: MsgType = MsgType(0x0b);
    pub const M_DELAY: MsgType = MsgType(0x0c);
    pub const M_CTL: MsgType = MsgType(0x0d);
    pub const M_IOCTL: MsgType = MsgType(0x0e);
    pub const M_SETOPTS: MsgType = MsgType(0x10);
    pub const M_IOCACK: MsgType = MsgType(0x81);
    pub const M_IOCNAK: MsgType = MsgType(0x82);
    pub const M_PCPROTO: MsgType = MsgType(0x83);
    pub const M_PCSIG: MsgType = MsgType(0x84);
    pub const M_READ: MsgType = MsgType(0x85);
    pub const M_FLUSH: MsgType = MsgType(0x86);
    pub const M_STOP: MsgType = MsgType(0x87);
    pub const M_START: MsgType = MsgType(0x88);
    pub const M_HANGUP: MsgType = MsgType(0x89);
    pub const M_ERROR: MsgType = MsgType(0x8a);
    pub const M_COPYIN: MsgType = MsgType(0x8b);
    pub const M_COPYOUT: MsgType = MsgType(0x8c);
    pub const M_IOCDATA: MsgType = MsgType(0x8d);
    pub const M_STOPI: MsgType = MsgType(0x8f);
    pub const M_STARTI: MsgType = MsgType(0x90);
    pub const M_UNHANGUP: MsgType = MsgType(0x92);
    /// The first high-priority type.
    pub const QPCTL: u8 = 0x80;

    /// High priority (`queclass` is QPCTL): never flow-controlled, queued first, band 0.
    pub fn is_high_priority(self) -> bool {
        self.0 >= Self::QPCTL
    }

    /// What `datamsg()` accepts and FLUSHDATA removes: M_DATA, M_PROTO, M_PCPROTO, M_DELAY.
    pub fn is_data(self) -> bool {
        matches!(
            self,
            Self::M_DATA | Self::M_PROTO | Self::M_PCPROTO | Self::M_DELAY
        )
    }
}

enum Storage {
    Heap(Box<[u8]>),
    /// A caller's buffer (esballoc). Invariant: `base..base + len` stays valid for reads and
    /// writes, and is touched by nobody but this data block, until `free` has run.
    External {
        base: *mut u8,
        len: usize,
    },
}

/// A data block (`datab`): the buffer, its type and what to do when it is released.
pub(crate) struct Dblk {
    storage: Storage,
    db_type: AtomicU8,
    /// Message blocks referring to this data block (`db_ref`). `dupb` checks the limit and
    /// takes a reference in one compare-and-swap, so concurrent dups cannot pass
    /// [`DBLK_REFMAX`] together; it moves with the `Arc`'s own count, which keeps the memory.
    refs: AtomicUsize,
    free: Option<FreeRoutine>,
    free_now: bool,
    /// Bytes charged to the pool for the current use ([`RELEASED`] once returned). Changed
    /// only by the holder of the only reference, so plain loads and stores suffice.
    charged: AtomicUsize,
    /// The pool's size class, for heap buffers it may recycle.
    class: Option<usize>,
    pool: Arc<Pool>,
}

// SAFETY: the only non-Send/Sync field is the external buffer pointer, whose owner handed
// it over (esballoc's contract) to be used by whichever thread holds the data block; access
// goes through `&self` for reads and a unique `&mut` (refcount 1) for writes.
unsafe impl Send for Dblk {}
unsafe impl Sync for Dblk {}

impl Dblk {
    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(b) => b,
            // SAFETY: see the invariant on `Storage::External`.
            Storage::External { base, len } => unsafe { core::slice::from_raw_parts(*base, *len) },
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(b) => b,
            // SAFETY: see the invariant on `Storage::External`; `&mut self` proves uniqueness.
            Storage::External { base, len } => unsafe {
                core::slice::from_raw_parts_mut(*base, *len)
            },
        }
    }
}

const RELEASED: usize = usize::MAX;

impl Dblk {
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the charge to the pool. Only the holder of the only reference calls this.
    fn release_charge(&self) {
        let bytes = self.charged.load(Ordering::Relaxed);
        if bytes != RELEASED {
            self.charged.store(RELEASED, Ordering::Relaxed);
            self.pool.release(bytes);
        }
    }
}

impl Drop for Dblk {
    fn drop(&mut self) {
        if let Some(free) = self.free.take() {
            if self.free_now {
                free(); // desballoc: in the thread dropping the last reference
            } else {
                self.pool.defer_free(free); // esballoc: some time later
            }
        }
        self.release_charge();
    }
}

/// A message block (`mblk_t`); a message is a chain of them linked by `b_cont`.
pub struct Mblk {
    /// Taken only in `Drop`, which recycles the data block when this was its last reference.
    db: ManuallyDrop<Arc<Dblk>>,
    rptr: usize,
    wptr: usize,
    band: u8,
    flag: u8,
    cont: Option<Box<Mblk>>,
}

impl core::fmt::Debug for Mblk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mblk")
            .field("type", &self.db_type())
            .field("band", &self.band)
            .field("len", &self.len())
            .field("cont", &self.cont)
            .finish()
    }
}

impl Drop for Mblk {
    fn drop(&mut self) {
        // Iteratively, so that a long b_cont chain cannot exhaust the stack.
        let mut next = self.cont.take();
        while let Some(mut b) = next {
            next = b.cont.take();
        }
        // SAFETY: `db` is never used after this; this is the only place that takes it.
        let db = unsafe { ManuallyDrop::take(&mut self.db) };
        let was = db.refs.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(was >= 1, "a data block's reference count went below zero");
        // The last reference (no weak references are ever made): recycle a heap block.
        if Arc::strong_count(&db) == 1 {
            core::sync::atomic::fence(Ordering::Acquire); // as Arc's own drop does
            if let (Some(class), Storage::Heap(_)) = (db.class, &db.storage) {
                db.release_charge();
                crate::cache::push(class, db);
            }
        }
    }
}

impl Mblk {
    /// A new heap block of `capacity` bytes charged as `size`.
    pub(crate) fn heap(
        pool: &Arc<Pool>,
        capacity: usize,
        size: usize,
        class: Option<usize>,
    ) -> Mblk {
        Self::with_dblk(Dblk {
            storage: Storage::Heap(vec![0u8; capacity].into_boxed_slice()),
            db_type: AtomicU8::new(MsgType::M_DATA.0),
            refs: AtomicUsize::new(1),
            free: None,
            free_now: false,
            charged: AtomicUsize::new(size),
            class,
            pool: pool.clone(),
        })
    }

    /// A recycled heap block, charged as `size`.
    pub(crate) fn reuse(db: Arc<Dblk>, size: usize) -> Mblk {
        debug_assert_eq!(Arc::strong_count(&db), 1, "a cached data block is unshared");
        db.refs.store(1, Ordering::Relaxed);
        db.charged.store(size, Ordering::Relaxed);
        db.db_type.store(MsgType::M_DATA.0, Ordering::Relaxed);
        Mblk {
            db: ManuallyDrop::new(db),
            rptr: 0,
            wptr: 0,
            band: 0,
            flag: 0,
            cont: None,
        }
    }

    /// # Safety
    /// `base..base + len` must stay valid for reads and writes, and be used by nobody
    /// else, until `free` has been called.
    pub(crate) unsafe fn external(
        pool: &Arc<Pool>,
        base: *mut u8,
        len: usize,
        free: FreeRoutine,
        free_now: bool,
    ) -> Mblk {
        Self::with_dblk(Dblk {
            storage: Storage::External { base, len },
            db_type: AtomicU8::new(MsgType::M_DATA.0),
            refs: AtomicUsize::new(1),
            free: Some(free),
            free_now,
            charged: AtomicUsize::new(0),
            class: None,
            pool: pool.clone(),
        })
    }

    fn with_dblk(db: Dblk) -> Mblk {
        Mblk {
            db: ManuallyDrop::new(Arc::new(db)),
            rptr: 0,
            wptr: 0,
            band: 0,
            flag: 0,
            cont: None,
        }
    }

    /// The message type (`db_type`) of this block's data block.
    pub fn db_type(&self) -> MsgType {
        MsgType(self.db.db_type.load(Ordering::Relaxed))
    }
    /// Sets the type of this block's data block (shared with its duplicates).
    pub fn set_type(&mut self, t: MsgType) {
        self.db.db_type.store(t.0, Ordering::Relaxed);
    }
    /// References to the data block (`db_ref`).
    pub fn db_ref(&self) -> usize {
        self.db.refs.load(Ordering::Acquire)
    }
    /// An identity of this block's data block, the same for its duplicates and stable while
    /// any reference to it lives (its address; reused only after it is gone).
    pub fn db_id(&self) -> usize {
        Arc::as_ptr(&*self.db) as *const u8 as usize
    }
    /// Size of the data buffer (`db_lim - db_base`).
    pub fn capacity(&self) -> usize {
        self.db.bytes().len()
    }
    /// Read offset (`b_rptr - db_base`).
    pub fn rptr(&self) -> usize {
        self.rptr
    }
    /// Write offset (`b_wptr - db_base`).
    pub fn wptr(&self) -> usize {
        self.wptr
    }
    /// Moves the read and write offsets; `rptr <= wptr <= capacity` or an error.
    pub fn set_ptrs(&mut self, rptr: usize, wptr: usize) -> Result<(), Error> {
        if rptr > wptr || wptr > self.capacity() {
            return Err(Error::BadMessage("read/write offsets outside the buffer"));
        }
        self.rptr = rptr;
        self.wptr = wptr;
        Ok(())
    }
    /// The bytes between the read and write offsets of this block.
    pub fn data(&self) -> &[u8] {
        &self.db.bytes()[self.rptr..self.wptr]
    }
    /// The bytes of this block, writable when this block holds the only reference.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        let (r, w) = (self.rptr, self.wptr);
        Arc::get_mut(&mut self.db).map(|d| &mut d.bytes_mut()[r..w])
    }
    /// Appends `bytes` at the write offset; fails if shared or if they do not fit.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let w = self.wptr;
        let db =
            Arc::get_mut(&mut self.db).ok_or(Error::BadMessage("write to a shared data block"))?;
        let buf = db.bytes_mut();
        if buf.len() - w < bytes.len() {
            return Err(Error::BadMessage("write past the end of the buffer"));
        }
        buf[w..w + bytes.len()].copy_from_slice(bytes);
        self.wptr += bytes.len();
        Ok(())
    }
    /// Bytes in this block (`b_wptr - b_rptr`).
    pub fn len(&self) -> usize {
        self.wptr - self.rptr
    }
    /// Whether this block holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Priority band (`b_band`).
    pub fn band(&self) -> u8 {
        self.band
    }
    /// Sets the priority band.
    pub fn set_band(&mut self, band: u8) {
        self.band = band;
    }
    /// Flags (`b_flag`: MSGMARK, MSGNOLOOP, MSGDELIM).
    pub fn flag(&self) -> u8 {
        self.flag
    }
    /// Sets the flags.
    pub fn set_flag(&mut self, flag: u8) {
        self.flag = flag;
    }
    /// The continuation block (`b_cont`).
    pub fn cont(&self) -> Option<&Mblk> {
        self.cont.as_deref()
    }
    /// The continuation block, mutably.
    pub fn cont_mut(&mut self) -> Option<&mut Mblk> {
        self.cont.as_deref_mut()
    }
    /// The blocks of the message, first to last.
    pub fn blocks(&self) -> impl Iterator<Item = &Mblk> {
        core::iter::successors(Some(self), |b| b.cont())
    }
    /// Appends `other` at the end of this message's chain (`linkb`).
    pub fn linkb(&mut self, other: Mblk) {
        let mut last = self;
        while last.cont.is_some() {
            last = last.cont.as_deref_mut().expect("checked");
        }
        last.cont = Some(Box::new(other));
    }
    /// Removes and returns the rest of the chain after this block (`unlinkb`).
    pub fn unlinkb(&mut self) -> Option<Mblk> {
        self.cont.take().map(|b| *b)
    }
    /// Bytes in the M_DATA blocks of the message (`msgdsize`).
    pub fn msgdsize(&self) -> usize {
        self.blocks()
            .filter(|b| b.db_type() == MsgType::M_DATA)
            .map(Mblk::len)
            .sum()
    }
    /// Bytes in every block of the message, whatever its type (flow-control count).
    pub fn msgsize(&self) -> usize {
        self.blocks().map(Mblk::len).sum()
    }
    /// Frees this block and returns the rest of the chain (`freeb`).
    pub fn freeb(mut self) -> Option<Mblk> {
        self.unlinkb()
    }
    /// Frees every block of the message (`freemsg`).
    pub fn freemsg(self) {}

    fn pool(&self) -> &Arc<Pool> {
        &self.db.pool
    }

    /// A new block sharing this block's data (`dupb`): `None` when out of memory or when the
    /// data block already has [`DBLK_REFMAX`] references.
    pub fn dupb(&self) -> Option<Mblk> {
        self.db
            .refs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < DBLK_REFMAX).then_some(r + 1)
            })
            .ok()?;
        Some(self.block_over_same_data())
    }
    /// Duplicates every block of the message (`dupmsg`); all or nothing.
    pub fn dupmsg(&self) -> Option<Mblk> {
        self.map_chain(Mblk::dupb)
    }
    /// A copy of this block in a new data block (`copyb`): type, band, flag and offsets kept.
    pub fn copyb(&self) -> Option<Mblk> {
        let mut b = self.pool().allocb(self.capacity())?;
        let db = Arc::get_mut(&mut b.db).expect("fresh block");
        db.bytes_mut()[self.rptr..self.wptr].copy_from_slice(self.data());
        db.db_type.store(self.db_type().0, Ordering::Relaxed);
        b.rptr = self.rptr;
        b.wptr = self.wptr;
        b.band = self.band;
        b.flag = self.flag;
        Some(b)
    }
    /// Copies every block of the message (`copymsg`); all or nothing.
    pub fn copymsg(&self) -> Option<Mblk> {
        self.map_chain(Mblk::copyb)
    }

    fn map_chain(&self, f: impl Fn(&Mblk) -> Option<Mblk>) -> Option<Mblk> {
        let mut head = f(self)?;
        let mut tail = &mut head;
        for b in self.blocks().skip(1) {
            // On failure `head` is dropped, freeing what was built.
            tail.cont = Some(Box::new(f(b)?));
            tail = tail.cont.as_deref_mut().expect("just set");
        }
        Some(head)
    }

    /// Concatenates the first `len` bytes (all, if negative) of the leading blocks that have
    /// this block's type into this one block (`pullupmsg`). False if there are not enough
    /// bytes or no buffer; the message is then unchanged.
    pub fn pullupmsg(&mut self, len: isize) -> bool {
        let ty = self.db_type();
        let avail: usize = self
            .blocks()
            .take_while(|b| b.db_type() == ty)
            .map(Mblk::len)
            .sum();
        let want = if len < 0 { avail } else { len as usize };
        if want > avail {
            return false;
        }
        let Some(mut fresh) = self.pool().allocb(want) else {
            return false;
        };
        fresh.set_type(ty);
        fresh.band = self.band;
        fresh.flag = self.flag;
        let mut old = core::mem::replace(self, fresh);
        let mut need = want;
        let mut rest = Some(old.take_cont_box());
        let mut first = Some(old);
        let mut remainder: alloc::vec::Vec<Mblk> = alloc::vec::Vec::new();
        while let Some(mut blk) = first
            .take()
            .or_else(|| rest.as_mut().and_then(|r| r.pop_front()))
        {
            if need > 0 {
                let take = need.min(blk.len());
                self.write(&blk.data()[..take]).expect("sized above");
                need -= take;
                blk.rptr += take;
                if blk.is_empty() {
                    continue;
                }
            }
            remainder.push(blk);
        }
        self.cont = Self::relink(remainder);
        true
    }

    /// Trims `len` bytes from the head (positive) or the tail (negative) of the blocks that
    /// have the first block's type (`adjmsg`). False, with nothing changed, if there are
    /// fewer bytes than that.
    pub fn adjmsg(&mut self, len: isize) -> bool {
        let ty = self.db_type();
        let mut left = len.unsigned_abs();
        let placeholder = self.dupb_unchecked();
        let mut first = core::mem::replace(self, placeholder);
        let rest = first.take_cont_box();
        let mut blocks = alloc::vec![first];
        blocks.extend(rest);
        let same = |b: &Mblk| b.db_type() == ty;
        let ok = if len >= 0 {
            let avail: usize = blocks.iter().take_while(|b| same(b)).map(Mblk::len).sum();
            avail >= left && {
                for b in blocks.iter_mut().take_while(|b| same(b)) {
                    let take = left.min(b.len());
                    b.rptr += take;
                    left -= take;
                }
                true
            }
        } else {
            let avail: usize = blocks.iter().filter(|b| same(b)).map(Mblk::len).sum();
            avail >= left && {
                for b in blocks.iter_mut().rev().filter(|b| same(b)) {
                    let take = left.min(b.len());
                    b.wptr -= take;
                    left -= take;
                }
                true
            }
        };
        let mut blocks = blocks.into_iter();
        *self = blocks.next().expect("first block");
        self.cont = Self::relink(blocks.collect());
        ok
    }

    /// A duplicate without the limit (a short-lived placeholder).
    fn dupb_unchecked(&self) -> Mblk {
        self.db.refs.fetch_add(1, Ordering::AcqRel);
        self.block_over_same_data()
    }

    /// A block over the same data; the caller has taken its reference in `refs`.
    fn block_over_same_data(&self) -> Mblk {
        Mblk {
            db: self.db.clone(),
            rptr: self.rptr,
            wptr: self.wptr,
            band: self.band,
            flag: self.flag,
            cont: None,
        }
    }

    /// Detaches the chain after this block as a list of single blocks.
    fn take_cont_box(&mut self) -> alloc::collections::VecDeque<Mblk> {
        let mut out = alloc::collections::VecDeque::new();
        let mut cur = self.cont.take();
        while let Some(mut b) = cur {
            cur = b.cont.take();
            out.push_back(*b);
        }
        out
    }

    fn relink(blocks: alloc::vec::Vec<Mblk>) -> Option<Box<Mblk>> {
        let mut tail: Option<Box<Mblk>> = None;
        for mut b in blocks.into_iter().rev() {
            b.cont = tail;
            tail = Some(Box::new(b));
        }
        tail
    }
}
