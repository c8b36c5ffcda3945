//! Queues: message lists in priority order, flow control (QFULL, QWANTW, back-enabling),
//! service enabling (QWANTR, QNOENB, qenable), and the handles modules use: [`Q`] inside an
//! entry point, [`QueueRef`] from anywhere else.
//!
//! A queue's list is ordered: high-priority messages (FIFO), then bands 255 down to 1
//! (each FIFO), then band 0. High-priority messages count in the band-0 totals.

use crate::error::Error;
use crate::msg::{Mblk, MsgType};
use crate::pair::QueuePair;
use crate::sched::Streams;
use crate::sync::{
    Arc, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicUsize, Mutex, Ordering,
};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Queue flag: on the service list.
pub const QENAB: u32 = 0x1;
/// Queue flag: a reader wants data (the next putq enables the service procedure).
pub const QWANTR: u32 = 0x2;
/// Queue flag: a writer was flow-controlled (back-enable when below the low-water mark).
pub const QWANTW: u32 = 0x4;
/// Queue flag: at or above the high-water mark.
pub const QFULL: u32 = 0x8;
/// Queue flag: this is a read queue.
pub const QREADR: u32 = 0x10;
/// Queue flag: putq/putbq/insq of ordinary messages do not enable.
pub const QNOENB: u32 = 0x40;
/// Queue flag: the current service run was caused by back-enabling.
pub const QBACK: u32 = 0x100;
/// Queue flag: the service procedure is running.
pub const QINSERVICE: u32 = 0x10000;
/// Queue flag: closing; never enabled again.
pub const QWCLOSE: u32 = 0x20000;
/// Queue flag: last queue of the stream in its direction.
pub const QEND: u32 = 0x40000;
/// Private: someone waits for the service procedure to finish.
pub(crate) const QWAITSVC: u32 = 0x80_0000;
/// Band flag: band at or above its high-water mark.
pub const QB_FULL: u32 = 0x1;
/// Band flag: a writer of this band was flow-controlled.
pub const QB_WANTW: u32 = 0x2;
/// Band flag: this band caused a back-enable.
pub const QB_BACK: u32 = 0x4;
/// Flush the read side.
pub const FLUSHR: u8 = 0x1;
/// Flush the write side.
pub const FLUSHW: u8 = 0x2;
/// Flush both sides.
pub const FLUSHRW: u8 = 0x3;
/// Flush only the band in the second byte.
pub const FLUSHBAND: u8 = 0x4;
/// flushq: remove every message.
pub const FLUSHALL: u8 = 1;
/// flushq: remove only data messages.
pub const FLUSHDATA: u8 = 0;
/// Packet size without limit.
pub const INFPSZ: isize = -1;

/// Which queue of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The read queue (messages travel up, towards the stream head).
    Read = 0,
    /// The write queue (messages travel down, towards the driver).
    Write = 1,
}

/// A perimeter for qwriter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perim {
    /// `PERIM_INNER` (1).
    Inner = 1,
    /// `PERIM_OUTER` (2).
    Outer = 2,
}

/// The entry point a thread is in, which decides what it may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An open routine.
    Open,
    /// A close routine.
    Close,
    /// A put procedure.
    Put,
    /// A service procedure.
    Srv,
    /// A qtimeout/qbufcall callback (with its id).
    Callback(u64),
    /// A qwriter callback.
    Writer,
}

impl Entry {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Entry::Open => "open",
            Entry::Close => "close",
            Entry::Put => "put",
            Entry::Srv => "srv",
            Entry::Callback(_) => "a qtimeout/qbufcall callback",
            Entry::Writer => "a qwriter callback",
        }
    }
}

#[derive(Default)]
struct Band {
    count: usize,
    mblkcnt: usize,
    nmsgs: usize,
    hiwat: usize,
    lowat: usize,
    flags: u32,
}

#[derive(Default)]
struct List {
    msgs: VecDeque<Mblk>,
    /// High-priority messages at the front.
    hp: usize,
    /// Band-0 (and high-priority) byte and block counts.
    count: usize,
    mblkcnt: usize,
    /// Normal band-0 messages.
    n0: usize,
    /// Band records 1..=bands.len(), created on first use.
    bands: Vec<Band>,
}

fn blocks(mp: &Mblk) -> usize {
    mp.blocks().count()
}

fn order_key(mp: &Mblk) -> u16 {
    if mp.db_type().is_high_priority() {
        256
    } else {
        mp.band() as u16
    }
}

impl List {
    /// Index where the section of `key` (256 = high priority) starts and ends.
    fn section(&self, key: u16) -> (usize, usize) {
        if key == 256 {
            return (0, self.hp);
        }
        let above: usize = self.bands.iter().skip(key as usize).map(|b| b.nmsgs).sum();
        let start = self.hp + above;
        let len = if key == 0 {
            self.n0
        } else {
            self.bands[key as usize - 1].nmsgs
        };
        (start, start + len)
    }
}

/// One queue of a pair: its message list, flags, limits and links.
pub struct Queue {
    side: Side,
    pub(crate) has_srv: bool,
    pub(crate) flags: AtomicU32,
    hiwat: AtomicUsize,
    lowat: AtomicUsize,
    minpsz: AtomicIsize,
    maxpsz: AtomicIsize,
    list: Mutex<List>,
    /// The pair this queue lives in; see [`Queue::pair`].
    pair: *const QueuePair,
    pub(crate) next: AtomicPtr<Queue>,
    pub(crate) prev: AtomicPtr<Queue>,
    pub(crate) nfsrv: AtomicPtr<Queue>,
    /// Messages deferred on a syncq for this queue (`q_syncqmsgs`).
    deferred: AtomicUsize,
    /// This queue's deferred messages made a service queue QFULL (a hint for the fast
    /// path; `sq_full_target` names the queue).
    sq_full: AtomicBool,
    sq_full_target: Mutex<Option<QueueRef>>,
}

// SAFETY: `pair` points at the QueuePair that contains this queue (set once, before the
// queue is reachable); every other field is Sync.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

/// Dereferences a queue link (`q_next`, `q_prev`, `q_nfsrv`).
///
/// SAFETY (the link invariant): links change only while every syncq of the stream has no
/// claims and no thread walks the stream (plumbing waits for both), and a pair stays
/// allocated until it is unlinked. Callers hold a claim in the stream (they run inside an
/// entry point) or are counted as walkers of the stream.
pub(crate) fn link<'a>(p: *mut Queue) -> Option<&'a Queue> {
    // SAFETY: see above.
    unsafe { p.cast_const().as_ref() }
}

impl Queue {
    pub(crate) fn new(
        side: Side,
        info: &crate::module::ModuleInfo,
        has_srv: bool,
        pair: *const QueuePair,
    ) -> Queue {
        let read = if side == Side::Read { QREADR } else { 0 };
        Queue {
            side,
            has_srv,
            flags: AtomicU32::new(QWANTR | read),
            hiwat: AtomicUsize::new(info.hiwat),
            lowat: AtomicUsize::new(info.lowat),
            minpsz: AtomicIsize::new(info.minpsz),
            maxpsz: AtomicIsize::new(info.maxpsz),
            list: Mutex::new(List::default()),
            pair,
            next: AtomicPtr::new(core::ptr::null_mut()),
            prev: AtomicPtr::new(core::ptr::null_mut()),
            nfsrv: AtomicPtr::new(core::ptr::null_mut()),
            deferred: AtomicUsize::new(0),
            sq_full: AtomicBool::new(false),
            sq_full_target: Mutex::new(None),
        }
    }

    pub(crate) fn pair(&self) -> &QueuePair {
        // SAFETY: a Queue exists only inside the QueuePair that `pair` points at, so the pair
        // lives at least as long as `&self`.
        unsafe { &*self.pair }
    }

    pub(crate) fn streams(&self) -> &Streams {
        &self.pair().streams
    }

    /// Which queue of its pair this is.
    pub fn side(&self) -> Side {
        self.side
    }
    /// Whether this is the read queue (`QREADR`).
    pub fn is_read(&self) -> bool {
        self.side == Side::Read
    }
    /// The other queue of the pair (`OTHERQ`).
    pub fn other(&self) -> &Queue {
        self.pair().queue(match self.side {
            Side::Read => Side::Write,
            Side::Write => Side::Read,
        })
    }
    /// The read queue of the pair (`RD`).
    pub fn rd(&self) -> &Queue {
        self.pair().queue(Side::Read)
    }
    /// The write queue of the pair (`WR`).
    pub fn wr(&self) -> &Queue {
        self.pair().queue(Side::Write)
    }
    /// The name of the module or driver.
    pub fn name(&self) -> &'static str {
        self.pair().def.name
    }
    /// The queue flags (`q_flag`).
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::SeqCst)
    }
    /// The flags of band `band` (0 if the band has no record).
    pub fn band_flags(&self, band: u8) -> u32 {
        let l = self.list.lock();
        l.bands
            .get((band as usize).wrapping_sub(1))
            .map_or(0, |b| b.flags)
    }
    /// Bytes on the queue in band 0 and high priority (`q_count`).
    pub fn count(&self) -> usize {
        self.list.lock().count
    }
    /// Messages on the queue.
    pub fn len(&self) -> usize {
        self.list.lock().msgs.len()
    }
    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// High-water mark (`q_hiwat`).
    pub fn hiwat(&self) -> usize {
        self.hiwat.load(Ordering::Relaxed)
    }
    /// Low-water mark (`q_lowat`).
    pub fn lowat(&self) -> usize {
        self.lowat.load(Ordering::Relaxed)
    }
    /// Sets the high-water mark (does not clear QFULL by itself).
    pub fn set_hiwat(&self, v: usize) {
        self.hiwat.store(v, Ordering::Relaxed)
    }
    /// Sets the low-water mark.
    pub fn set_lowat(&self, v: usize) {
        self.lowat.store(v, Ordering::Relaxed)
    }
    /// Minimum packet size (`q_minpsz`).
    pub fn minpsz(&self) -> isize {
        self.minpsz.load(Ordering::Relaxed)
    }
    /// Maximum packet size (`q_maxpsz`).
    pub fn maxpsz(&self) -> isize {
        self.maxpsz.load(Ordering::Relaxed)
    }
    /// Sets the packet size limits.
    pub fn set_psz(&self, min: isize, max: isize) {
        self.minpsz.store(min, Ordering::Relaxed);
        self.maxpsz.store(max, Ordering::Relaxed);
    }
    /// Sets a band's marks (creating its record).
    pub fn set_band_marks(&self, band: u8, hiwat: usize, lowat: usize) {
        if band == 0 {
            self.set_hiwat(hiwat);
            self.set_lowat(lowat);
            return;
        }
        let mut l = self.list.lock();
        self.ensure_band(&mut l, band);
        let b = &mut l.bands[band as usize - 1];
        b.hiwat = hiwat;
        b.lowat = lowat;
    }
    /// The flags of this queue's inner perimeter (`SQ_*`), a diagnostic for tests.
    pub fn syncq_flags(&self) -> u32 {
        self.pair().syncq(self.side).load() & 0xff
    }
    /// Threads inside this queue's inner perimeter, a diagnostic for tests.
    pub fn syncq_count(&self) -> u32 {
        self.pair().syncq(self.side).count()
    }
    /// Types and bands of the queued messages, front first (for tests and diagnostics).
    pub fn peek_order(&self) -> Vec<(MsgType, u8, usize)> {
        self.list
            .lock()
            .msgs
            .iter()
            .map(|m| (m.db_type(), m.band(), m.msgsize()))
            .collect()
    }
    /// Applies `f` to each queued message, front first.
    pub fn for_each(&self, mut f: impl FnMut(&Mblk)) {
        self.list.lock().msgs.iter().for_each(&mut f)
    }

    fn ensure_band(&self, l: &mut List, band: u8) {
        while l.bands.len() < band as usize {
            l.bands.push(Band {
                hiwat: self.hiwat(),
                lowat: self.lowat(),
                ..Band::default()
            });
        }
    }

    fn set_flag(&self, f: u32) {
        self.flags.fetch_or(f, Ordering::SeqCst);
    }
    fn clear_flag(&self, f: u32) {
        self.flags.fetch_and(!f, Ordering::SeqCst);
    }

    /// Inserts at `idx` with accounting; the caller checked the order.
    fn insert_locked(&self, l: &mut List, idx: usize, mp: Mblk) {
        let (size, nblk) = (mp.msgsize(), blocks(&mp));
        let key = order_key(&mp);
        match key {
            256 => l.hp += 1,
            0 => l.n0 += 1,
            b => l.bands[b as usize - 1].nmsgs += 1,
        }
        if key == 0 || key == 256 {
            l.count += size;
            l.mblkcnt += nblk;
            let hi = self.hiwat();
            if l.count >= hi || l.mblkcnt >= hi {
                self.set_flag(QFULL);
            }
        } else {
            let b = &mut l.bands[key as usize - 1];
            b.count += size;
            b.mblkcnt += nblk;
            if b.count >= b.hiwat || b.mblkcnt >= b.hiwat {
                b.flags |= QB_FULL;
            }
        }
        l.msgs.insert(idx, mp);
    }

    /// Removes the message at `idx` with accounting; returns it and the band to back-enable.
    fn remove_locked(&self, l: &mut List, idx: usize) -> (Mblk, Option<u8>) {
        let mp = l.msgs.remove(idx).expect("index checked by caller");
        let (size, nblk) = (mp.msgsize(), blocks(&mp));
        let key = order_key(&mp);
        match key {
            256 => l.hp -= 1,
            0 => l.n0 -= 1,
            b => l.bands[b as usize - 1].nmsgs -= 1,
        }
        let backenable = if key == 0 || key == 256 {
            l.count -= size;
            l.mblkcnt -= nblk;
            let hi = self.hiwat();
            if l.mblkcnt == 0 || (l.count < hi && l.mblkcnt < hi) {
                self.clear_flag(QFULL);
            }
            let lo = self.lowat();
            let f = self.flags();
            (f & QWANTW != 0 && ((l.count < lo && l.mblkcnt < lo) || lo == 0)).then(|| {
                self.clear_flag(QWANTW);
                0
            })
        } else {
            let b = &mut l.bands[key as usize - 1];
            b.count -= size;
            b.mblkcnt -= nblk;
            if b.mblkcnt == 0 || (b.count < b.hiwat && b.mblkcnt < b.hiwat) {
                b.flags &= !QB_FULL;
            }
            (b.flags & QB_WANTW != 0
                && ((b.count < b.lowat && b.mblkcnt < b.lowat) || b.lowat == 0))
                .then(|| {
                    b.flags &= !QB_WANTW;
                    key as u8
                })
        };
        (mp, backenable)
    }

    /// Queues a message in priority order (`putq`) and enables the service procedure as
    /// the DDI says: always for high priority, else if not QNOENB and (QWANTR or band > 0).
    /// Never refuses because of QFULL.
    pub fn putq(&self, mut mp: Mblk) {
        let hp = mp.db_type().is_high_priority();
        if hp {
            mp.set_band(0);
        }
        let band = mp.band();
        {
            let mut l = self.list.lock();
            if band > 0 {
                self.ensure_band(&mut l, band);
            }
            let (_, end) = l.section(order_key(&mp));
            self.insert_locked(&mut l, end, mp);
        }
        let f = self.flags();
        if hp || (f & QNOENB == 0 && (f & QWANTR != 0 || band > 0)) {
            self.qenable();
        }
    }

    /// Puts a message back at the front of its section (`putbq`); enables if high priority,
    /// or if not QNOENB and QWANTR.
    pub fn putbq(&self, mut mp: Mblk) {
        let hp = mp.db_type().is_high_priority();
        if hp {
            mp.set_band(0);
        }
        {
            let mut l = self.list.lock();
            if mp.band() > 0 {
                self.ensure_band(&mut l, mp.band());
            }
            let (start, _) = l.section(order_key(&mp));
            self.insert_locked(&mut l, start, mp);
        }
        let f = self.flags();
        if hp || (f & QNOENB == 0 && f & QWANTR != 0) {
            self.qenable();
        }
    }

    /// Inserts `mp` before the message at index `before` (at the end if `None`) (`insq`).
    /// Refuses, giving the message back, an insertion that would break the order.
    pub fn insq(&self, before: Option<usize>, mut mp: Mblk) -> Result<(), (Error, Mblk)> {
        if mp.db_type().is_high_priority() {
            mp.set_band(0);
        }
        {
            let mut l = self.list.lock();
            let idx = before.unwrap_or(l.msgs.len());
            let key = order_key(&mp);
            let ok_prev = idx == 0 || l.msgs.get(idx - 1).is_some_and(|p| order_key(p) >= key);
            let ok_next = l.msgs.get(idx).is_none_or(|n| order_key(n) <= key);
            if idx > l.msgs.len() || !ok_prev || !ok_next {
                return Err((Error::InsqOutOfOrder, mp));
            }
            if mp.band() > 0 {
                self.ensure_band(&mut l, mp.band());
            }
            self.insert_locked(&mut l, idx, mp);
        }
        let f = self.flags();
        if f & QNOENB == 0 && f & QWANTR != 0 {
            self.qenable();
        }
        Ok(())
    }

    /// Takes the first message (`getq`). On an empty queue sets QWANTR; otherwise clears it,
    /// updates QFULL and back-enables the nearest upstream service procedure when a writer
    /// waits and the counts fell below the low-water mark.
    pub fn getq(&self) -> Option<Mblk> {
        let (mp, be) = {
            let mut l = self.list.lock();
            if l.msgs.is_empty() {
                self.set_flag(QWANTR);
                return None;
            }
            self.clear_flag(QWANTR);
            self.remove_locked(&mut l, 0)
        };
        if let Some(band) = be {
            self.backenable(band);
        }
        Some(mp)
    }

    /// Removes the message at index `idx` (`rmvq`), with the same accounting as getq.
    pub fn rmvq(&self, idx: usize) -> Option<Mblk> {
        let (mp, be) = {
            let mut l = self.list.lock();
            if idx >= l.msgs.len() {
                return None;
            }
            self.remove_locked(&mut l, idx)
        };
        if let Some(band) = be {
            self.backenable(band);
        }
        Some(mp)
    }

    /// Removes data messages ([`FLUSHDATA`]) or all messages ([`FLUSHALL`]) (`flushq`);
    /// may back-enable.
    pub fn flushq(&self, flag: u8) {
        self.flush_where(|m| flag == FLUSHALL || m.db_type().is_data());
    }

    /// Like [`Queue::flushq`] but only for band `band` (`flushband`); band 0 means every
    /// message with `b_band` 0, high-priority ones included. A band never used is a no-op.
    pub fn flushband(&self, band: u8, flag: u8) {
        if band as usize > self.list.lock().bands.len() {
            return;
        }
        self.flush_where(|m| m.band() == band && (flag == FLUSHALL || m.db_type().is_data()));
    }

    fn flush_where(&self, pred: impl Fn(&Mblk) -> bool) {
        let mut backenable = Vec::new();
        let freed: Vec<Mblk> = {
            let mut l = self.list.lock();
            let mut out = Vec::new();
            let mut i = 0;
            while i < l.msgs.len() {
                if pred(&l.msgs[i]) {
                    let (mp, be) = self.remove_locked(&mut l, i);
                    out.push(mp);
                    backenable.extend(be);
                } else {
                    i += 1;
                }
            }
            out
        };
        drop(freed); // outside the lock: free routines may run
        backenable.sort_unstable();
        backenable.dedup();
        for band in backenable {
            self.backenable(band);
        }
    }

    /// Enables the nearest queue *upstream* of this one that has a service procedure,
    /// marking it QBACK (or QB_BACK for `band`).
    pub(crate) fn backenable(&self, band: u8) {
        let _walk = self.pair().walk();
        self.backenable_walked(band);
    }

    /// [`Queue::backenable`] for a caller that already may follow the links.
    pub(crate) fn backenable_walked(&self, band: u8) {
        let mut p = link(self.prev.load(Ordering::SeqCst));
        while let Some(q) = p {
            if q.has_srv {
                if band == 0 {
                    q.set_flag(QBACK);
                } else {
                    let mut l = q.list.lock();
                    if let Some(b) = l.bands.get_mut(band as usize - 1) {
                        b.flags |= QB_BACK;
                    }
                }
                q.qenable();
                return;
            }
            p = link(q.prev.load(Ordering::SeqCst));
        }
    }

    /// Messages deferred for this queue, waiting to enter its perimeter.
    pub fn deferred(&self) -> usize {
        self.deferred.load(Ordering::SeqCst)
    }

    /// Counts messages deferred for this queue. Past the framework's `syncq_max`, the
    /// queue's nearest service queue forward becomes QFULL, so that canputnext fails
    /// upstream (syncq flow control).
    /// Every caller may follow the links already (it holds a claim in the stream, is a
    /// walker, or is the plumbing thread), so this never starts a walk of its own: walks do
    /// not nest.
    pub(crate) fn deferred_added(&self, n: usize) {
        let now = self.deferred.fetch_add(n, Ordering::SeqCst) + n;
        if now <= self.streams().syncq_max() || self.sq_full.load(Ordering::SeqCst) {
            return;
        }
        let mut made_full = self.sq_full_target.lock();
        if made_full.is_none() {
            let target = link(self.nfsrv.load(Ordering::SeqCst)).unwrap_or(self);
            {
                let _l = target.list.lock();
                target.set_flag(QFULL);
            }
            // Remembered, so the same queue is re-evaluated even if plumbing moves q_nfsrv.
            *made_full = Some(target.pair().self_ref(target.side()));
            self.sq_full.store(true, Ordering::SeqCst);
        }
    }

    /// Uncounts delivered (or moved, or freed) deferred messages. When none remain, the
    /// QFULL they caused is re-evaluated with the usual rules (and may back-enable).
    /// A message is counted before it is queued and uncounted after its put returned, so
    /// the count reaches 0 only after every overflow it saw was recorded.
    pub(crate) fn deferred_removed(&self, n: usize) {
        let now = self.deferred.fetch_sub(n, Ordering::SeqCst) - n;
        if now != 0 || !self.sq_full.load(Ordering::SeqCst) {
            return;
        }
        let Some(target) = self.sq_full_target.lock().take() else {
            return;
        };
        self.sq_full.store(false, Ordering::SeqCst);
        let backenable = {
            let l = target.list.lock();
            let (hi, lo) = (target.hiwat(), target.lowat());
            if l.mblkcnt == 0 || (l.count < hi && l.mblkcnt < hi) {
                target.clear_flag(QFULL);
            }
            let wanted =
                target.flags() & QWANTW != 0 && ((l.count < lo && l.mblkcnt < lo) || lo == 0);
            if wanted {
                target.clear_flag(QWANTW);
            }
            wanted
        };
        if backenable {
            target.backenable_walked(0);
        }
    }

    /// A queue leaving the stream back-enables the writers that wait for it (QWANTW,
    /// QB_WANTW): they retry against the queue that follows them now. Called by the plumbing
    /// thread while this queue's old links still name its neighbours.
    pub(crate) fn backenable_waiting_writers(&self) {
        let bands: Vec<u8> = {
            let mut l = self.list.lock();
            let mut bands = Vec::new();
            if self.flags() & QWANTW != 0 {
                self.clear_flag(QWANTW);
                bands.push(0);
            }
            for (i, b) in l.bands.iter_mut().enumerate() {
                if b.flags & QB_WANTW != 0 {
                    b.flags &= !QB_WANTW;
                    bands.push(i as u8 + 1);
                }
            }
            bands
        };
        for band in bands {
            self.backenable_walked(band);
        }
    }

    /// Forgets deferred messages that were dropped unseen (a closing stream head).
    pub(crate) fn deferred_forget(&self) {
        self.deferred.store(0, Ordering::SeqCst);
        self.sq_full.store(false, Ordering::SeqCst);
        drop(self.sq_full_target.lock().take());
    }

    /// Clears QBACK and every QB_BACK (at the end of a service run).
    pub(crate) fn clear_back(&self) {
        self.clear_flag(QBACK);
        for b in self.list.lock().bands.iter_mut() {
            b.flags &= !QB_BACK;
        }
    }

    /// Flow-control test of this queue's nearest service queue forward (`canput`): true if
    /// it is not full; otherwise sets QWANTW there and returns false.
    pub(crate) fn canput(&self) -> bool {
        let target = link(self.nfsrv.load(Ordering::SeqCst)).unwrap_or(self);
        if target.flags() & QFULL == 0 {
            return true;
        }
        let _l = target.list.lock();
        if target.flags() & QFULL == 0 {
            return true;
        }
        target.set_flag(QWANTW);
        false
    }

    /// `bcanput`: like canput for band `band` (0 is canput); a band without a record can.
    pub(crate) fn bcanput(&self, band: u8) -> bool {
        if band == 0 {
            return self.canput();
        }
        let target = link(self.nfsrv.load(Ordering::SeqCst)).unwrap_or(self);
        let mut l = target.list.lock();
        match l.bands.get_mut(band as usize - 1) {
            Some(b) if b.flags & QB_FULL != 0 => {
                b.flags |= QB_WANTW;
                false
            }
            _ => true,
        }
    }

    /// Schedules the service procedure (`qenable`): nothing if the queue has none, is
    /// closing or is already enabled; a run in progress runs once more.
    pub fn qenable(&self) {
        if !self.has_srv {
            return;
        }
        let mut f = self.flags();
        loop {
            if f & (QENAB | QWCLOSE) != 0 {
                return;
            }
            match self
                .flags
                .compare_exchange(f, f | QENAB, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => f = now,
            }
        }
        if f & QINSERVICE == 0 {
            self.streams()
                .schedule_service(self.pair().self_ref(self.side));
        }
    }

    /// Stops putq/putbq/insq of ordinary messages from enabling (`noenable`).
    pub fn noenable(&self) {
        self.set_flag(QNOENB);
    }
    /// Undoes [`Queue::noenable`] (`enableok`).
    pub fn enableok(&self) {
        self.clear_flag(QNOENB);
    }

    /// The framework instance this queue belongs to.
    pub fn streams_handle(&self) -> &Streams {
        self.streams()
    }

    /// Allocates a message from the framework's pool (`allocb`).
    pub fn allocb(&self, size: usize) -> Option<Mblk> {
        self.streams().allocb(size)
    }
}

/// A queue as seen from inside an entry point: the queue plus the entry the thread is in,
/// which decides what it may call (qwriter from put/srv/callbacks, qwait from open/close).
#[derive(Clone, Copy)]
pub struct Q<'a> {
    pub(crate) q: &'a Queue,
    pub(crate) entry: Entry,
    /// The thread holds the inner perimeter exclusively.
    pub(crate) excl: bool,
    /// The queue whose inner perimeter the entry holds (the other queue of a D_MTPERQ
    /// pair has a perimeter of its own, which this thread does not hold).
    pub(crate) held: Side,
    /// The qtimeout/qbufcall callback this thread runs in, also inside a qwriter callback
    /// it ran (0: none): cancelling it from there must not wait for itself.
    pub(crate) cb: u64,
}

impl<'a> core::ops::Deref for Q<'a> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        self.q
    }
}

impl<'a> Q<'a> {
    /// The entry `entry` into `q`'s own perimeter, outside any callback.
    pub(crate) fn new(q: &'a Queue, entry: Entry, excl: bool) -> Q<'a> {
        Q {
            q,
            entry,
            excl,
            held: q.side(),
            cb: 0,
        }
    }

    /// The entry point this thread is in.
    pub fn entry(&self) -> Entry {
        self.entry
    }
    /// The same entry seen from the other queue of the pair (`OTHERQ`).
    pub fn otherq(&self) -> Q<'a> {
        Q {
            q: self.q.other(),
            ..*self
        }
    }
    /// The same entry seen from the read queue of the pair (`RD`).
    pub fn rdq(&self) -> Q<'a> {
        Q {
            q: self.q.rd(),
            ..*self
        }
    }
    /// The same entry seen from the write queue of the pair (`WR`).
    pub fn wrq(&self) -> Q<'a> {
        Q {
            q: self.q.wr(),
            ..*self
        }
    }
    /// Passes `mp` to the put procedure of the next queue (`putnext`). Never blocks: if
    /// that perimeter is busy the message is deferred and delivered later, in order.
    pub fn putnext(&self, mp: Mblk) {
        match link(self.q.next.load(Ordering::Acquire)) {
            Some(next) => next.pair().deliver_put(next, mp),
            None => drop(mp),
        }
    }
    /// Flow-control test of this queue's nearest service queue forward (`canput`).
    pub fn canput(&self) -> bool {
        self.q.canput()
    }
    /// Band flow-control test of this queue's nearest service queue forward (`bcanput`).
    pub fn bcanput(&self, band: u8) -> bool {
        self.q.bcanput(band)
    }
    /// A module's canonical M_FLUSH handling: flush the sides the message names (one band
    /// with FLUSHBAND), then pass it on.
    pub fn flush_module(&self, mp: Mblk) {
        let flags = mp.data().first().copied().unwrap_or(0);
        let band = (flags & FLUSHBAND != 0)
            .then(|| mp.data().get(1).copied())
            .flatten();
        let flush = |q: &Queue| match band {
            Some(b) => q.flushband(b, FLUSHDATA),
            None => q.flushq(FLUSHDATA),
        };
        if flags & FLUSHR != 0 {
            flush(self.q.rd());
        }
        if flags & FLUSHW != 0 {
            flush(self.q.wr());
        }
        self.putnext(mp);
    }
    /// A driver's canonical M_FLUSH handling in its write put: flush the write side and
    /// clear FLUSHW; if FLUSHR remains, flush the read side and send the message back up;
    /// otherwise free it.
    pub fn flush_driver(&self, mut mp: Mblk) {
        let flags = mp.data().first().copied().unwrap_or(0);
        if flags & FLUSHW != 0 {
            self.q.wr().flushq(FLUSHDATA);
            if let Some(d) = mp.data_mut() {
                d[0] &= !FLUSHW;
            } else if let Some(mut copy) = mp.copyb() {
                copy.data_mut().expect("fresh copy")[0] &= !FLUSHW;
                mp = copy;
            } else {
                return; // no memory to answer: the read side stays as it is
            }
        }
        if flags & FLUSHR != 0 {
            self.q.rd().flushq(FLUSHDATA);
            self.wrq().qreply(mp);
        }
    }
    /// Sends `mp` back the other way (`qreply`: putnext on the other queue).
    pub fn qreply(&self, mp: Mblk) {
        self.otherq().putnext(mp)
    }
    /// Calls this queue's own put procedure (`put`), through its perimeter.
    pub fn put(&self, mp: Mblk) -> Result<(), Error> {
        self.q.pair().put_own(self.q, mp)
    }
    /// Flow-control test of the next queue (`canputnext`).
    pub fn canputnext(&self) -> bool {
        link(self.q.next.load(Ordering::Acquire)).is_none_or(Queue::canput)
    }
    /// Band flow-control test of the next queue (`bcanputnext`).
    pub fn bcanputnext(&self, band: u8) -> bool {
        link(self.q.next.load(Ordering::Acquire)).is_none_or(|n| n.bcanput(band))
    }
    /// A handle to this queue that may be kept and used from anywhere.
    pub fn to_ref(&self) -> QueueRef {
        self.q.pair().self_ref(self.q.side)
    }
}

/// A handle to a queue usable outside its entry points (an interrupt handler, another
/// thread, a plain callback). It may `put` to the queue and test flow control.
#[derive(Clone)]
pub struct QueueRef {
    pub(crate) pair: Arc<QueuePair>,
    pub(crate) side: Side,
}

impl core::ops::Deref for QueueRef {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        self.pair.queue(self.side)
    }
}

impl QueueRef {
    /// Calls the queue's put procedure through its perimeter (`put`); an error before
    /// qprocson or after qprocsoff. Never blocks: while the stream is being re-plumbed the
    /// message is parked and put when that ends (freed if the queue was removed meanwhile).
    pub fn put(&self, mp: Mblk) -> Result<(), Error> {
        // As a walker, so that qprocsoff cannot remove the pair between the linked test and
        // the deferral of the message onto its perimeter; parked during plumbing.
        crate::plumb::StreamInner::put_from_outside(self.pair.shared(), self, mp, false)
    }
    /// `putnext` from outside an entry point.
    /// Never blocks: parked like [`QueueRef::put`] during a plumbing change.
    pub fn putnext(&self, mp: Mblk) -> Result<(), Error> {
        crate::plumb::StreamInner::put_from_outside(self.pair.shared(), self, mp, true)
    }
    /// `canputnext` from outside an entry point.
    pub fn canputnext(&self) -> bool {
        let _walk = self.pair.walk();
        link(self.next.load(Ordering::Acquire)).is_none_or(Queue::canput)
    }
    /// `canput` from outside an entry point.
    pub fn canput(&self) -> bool {
        let _walk = self.pair.walk();
        (**self).canput()
    }
    /// `bcanput` from outside an entry point.
    pub fn bcanput(&self, band: u8) -> bool {
        let _walk = self.pair.walk();
        (**self).bcanput(band)
    }
    /// `bcanputnext` from outside an entry point.
    pub fn bcanputnext(&self, band: u8) -> bool {
        let _walk = self.pair.walk();
        link(self.next.load(Ordering::Acquire)).is_none_or(|n| n.bcanput(band))
    }
    /// Whether two handles name the same queue.
    pub fn same(&self, other: &QueueRef) -> bool {
        Arc::ptr_eq(&self.pair, &other.pair) && self.side == other.side
    }
}
