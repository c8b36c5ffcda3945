//! The stream head: the top queue pair of every stream. Its read put procedure applies the
//! stream-head conventions (M_FLUSH reflection, M_ERROR, M_HANGUP, M_SETOPTS, one
//! M_PCPROTO at a time, NAK of M_IOCTL from below); readers take messages with getq.

use crate::error::Errno;
use crate::module::Module;
use crate::msg::{MSGNOLOOP, Mblk, MsgType};
use crate::queue::{FLUSHBAND, FLUSHDATA, FLUSHR, FLUSHW, Q, QWANTW, Queue};
use crate::sync::{Arc, AtomicI32, Mutex, Ordering};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// M_SETOPTS flag: set the head read queue's high-water mark.
pub const SO_HIWAT: u32 = 0x10;
/// M_SETOPTS flag: set the head read queue's low-water mark.
pub const SO_LOWAT: u32 = 0x20;
/// M_SETOPTS flag: set the minimum packet size.
pub const SO_MINPSZ: u32 = 0x4;
/// M_SETOPTS flag: set the maximum packet size.
pub const SO_MAXPSZ: u32 = 0x8;
/// M_SETOPTS flag: the marks apply to band `band`.
pub const SO_BAND: u32 = 0x4000;
/// Error byte of M_ERROR meaning "leave this side as it is".
pub const NOERROR: u8 = 0xff;

/// Stream-head options carried by M_SETOPTS (`struct stroptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stroptions {
    /// Which fields apply (SO_*).
    pub flags: u32,
    /// Minimum packet size.
    pub minpsz: i64,
    /// Maximum packet size.
    pub maxpsz: i64,
    /// High-water mark.
    pub hiwat: u64,
    /// Low-water mark.
    pub lowat: u64,
    /// Band for SO_BAND.
    pub band: u8,
}

const STROPTIONS_LEN: usize = 4 + 8 * 4 + 1;

impl Stroptions {
    /// Encodes the options as the data of an M_SETOPTS message.
    pub fn encode(&self) -> [u8; STROPTIONS_LEN] {
        let mut b = [0u8; STROPTIONS_LEN];
        b[0..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..12].copy_from_slice(&self.minpsz.to_le_bytes());
        b[12..20].copy_from_slice(&self.maxpsz.to_le_bytes());
        b[20..28].copy_from_slice(&self.hiwat.to_le_bytes());
        b[28..36].copy_from_slice(&self.lowat.to_le_bytes());
        b[36] = self.band;
        b
    }

    /// Decodes M_SETOPTS data; `None` if it is too short.
    pub fn decode(b: &[u8]) -> Option<Stroptions> {
        if b.len() < STROPTIONS_LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Stroptions {
            flags: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            minpsz: u64_at(4) as i64,
            maxpsz: u64_at(12) as i64,
            hiwat: u64_at(20),
            lowat: u64_at(28),
            band: b[36],
        })
    }
}

/// What happened at a stream head (the user-level stand-in for signals and poll events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadEvent {
    /// M_HANGUP arrived (SIGHUP/POLLHUP).
    Hangup,
    /// M_UNHANGUP arrived.
    Unhangup,
    /// M_ERROR set these errors (read, write; `None` = no error).
    Error(Option<Errno>, Option<Errno>),
    /// An M_FLUSH flushed the head read queue.
    Flushed,
    /// An M_FLUSH was sent back down with these flags.
    FlushReflected(u8),
    /// An M_SETOPTS was applied.
    SetOpts(Stroptions),
    /// A second M_PCPROTO was discarded while one was unread.
    PcprotoDiscarded,
    /// An M_IOCTL from below was answered with M_IOCNAK.
    IoctlNaked,
    /// A message of this type was discarded.
    Discarded(MsgType),
}

/// What [`crate::Stream::read`] found.
#[derive(Debug)]
pub enum ReadResult {
    /// A message.
    Data(Mblk),
    /// End of file: hung up and nothing left to read.
    Eof,
    /// Nothing to read yet.
    WouldBlock,
    /// A read error set by M_ERROR.
    Error(Errno),
}

#[derive(Default)]
struct HeadInner {
    read_error: Option<Errno>,
    write_error: Option<Errno>,
    hangup: bool,
    events: Vec<HeadEvent>,
}

/// The state of a stream head: errors, hang-up, and an event log.
#[derive(Default)]
pub struct HeadState {
    inner: Mutex<HeadInner>,
    /// What a write returns now (0: it may proceed), kept in step with `inner` so that
    /// the write path takes no lock.
    write_block: AtomicI32,
    notify: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    writable: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl HeadState {
    /// The events seen so far, oldest first.
    pub fn events(&self) -> Vec<HeadEvent> {
        self.inner.lock().events.clone()
    }
    /// Whether the stream is hung up.
    pub fn is_hungup(&self) -> bool {
        self.inner.lock().hangup
    }
    /// The read and write errors set by M_ERROR.
    pub fn errors(&self) -> (Option<Errno>, Option<Errno>) {
        let i = self.inner.lock();
        (i.read_error, i.write_error)
    }
    /// Calls `f` whenever a message is queued for reading at the head.
    pub fn set_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.notify.lock() = Some(Box::new(f));
    }

    /// Calls `f` when the stream below the head drains after a write found it flow
    /// controlled (the back-enable of the head's write queue, which wakes blocked writers).
    pub fn set_writable(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.writable.lock() = Some(Box::new(f));
    }

    fn log(&self, e: HeadEvent) {
        self.inner.lock().events.push(e);
    }

    pub(crate) fn check_write(&self) -> Result<(), Errno> {
        match self.write_block.load(Ordering::Acquire) {
            0 => Ok(()),
            e => Err(Errno(e)),
        }
    }

    /// Recomputes the write verdict after a change of `inner`.
    fn update_write_block(&self, i: &HeadInner) {
        let e = if i.hangup {
            Errno::EIO.0
        } else {
            i.write_error.map_or(0, |e| e.0)
        };
        self.write_block.store(e, Ordering::Release);
    }

    pub(crate) fn read(&self, rq: &Queue) -> ReadResult {
        if let Some(e) = self.inner.lock().read_error {
            return ReadResult::Error(e);
        }
        match rq.getq() {
            Some(mp) => ReadResult::Data(mp),
            None if self.is_hungup() => ReadResult::Eof,
            None => ReadResult::WouldBlock,
        }
    }
}

/// The stream head's entry points.
pub(crate) struct HeadModule(pub(crate) Arc<HeadState>);

impl Module for HeadModule {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        if q.is_read() {
            strrput(q, &self.0, mp);
        } else {
            q.putnext(mp);
        }
    }
    /// The write queue's service procedure runs only when it is back-enabled: the stream
    /// below drained after a write was refused, so writers may go on (`strwsrv`).
    fn srv(&self, q: Q<'_>) {
        if !q.is_read()
            && let Some(f) = &*self.0.writable.lock()
        {
            f();
        }
    }
}

fn strrput(q: Q<'_>, st: &HeadState, mut mp: Mblk) {
    let ty = mp.db_type();
    match ty {
        MsgType::M_DATA | MsgType::M_PROTO => {
            q.putq(mp);
            notify(st);
        }
        MsgType::M_PCPROTO => {
            let mut held = false;
            q.for_each(|m| held |= m.db_type() == MsgType::M_PCPROTO);
            if held {
                st.log(HeadEvent::PcprotoDiscarded);
            } else {
                q.putq(mp);
                notify(st);
            }
        }
        MsgType::M_FLUSH => {
            let flags = mp.data().first().copied().unwrap_or(0);
            if flags & FLUSHR != 0 {
                match (flags & FLUSHBAND != 0, mp.data().get(1)) {
                    (true, Some(&band)) => q.flushband(band, FLUSHDATA),
                    _ => q.flushq(FLUSHDATA),
                }
                st.log(HeadEvent::Flushed);
            }
            if flags & FLUSHW != 0 && mp.flag() & MSGNOLOOP == 0 {
                let f = flags & !FLUSHR;
                if let Some(d) = mp.data_mut() {
                    d[0] = f;
                }
                mp.set_flag(mp.flag() | MSGNOLOOP);
                st.log(HeadEvent::FlushReflected(f));
                q.qreply(mp);
            }
        }
        MsgType::M_ERROR => m_error(q, st, mp),
        MsgType::M_HANGUP => {
            let mut i = st.inner.lock();
            i.hangup = true;
            st.update_write_block(&i);
            drop(i);
            st.log(HeadEvent::Hangup);
            notify(st);
        }
        MsgType::M_UNHANGUP => {
            let mut i = st.inner.lock();
            i.hangup = false;
            st.update_write_block(&i);
            drop(i);
            st.log(HeadEvent::Unhangup);
        }
        MsgType::M_SETOPTS => {
            if let Some(so) = Stroptions::decode(mp.data()) {
                setopts(&q, &so);
                st.log(HeadEvent::SetOpts(so));
            }
        }
        MsgType::M_IOCTL => {
            mp.set_type(MsgType::M_IOCNAK);
            st.log(HeadEvent::IoctlNaked);
            q.qreply(mp);
        }
        other => st.log(HeadEvent::Discarded(other)),
    }
}

fn notify(st: &HeadState) {
    if let Some(f) = &*st.notify.lock() {
        f();
    }
}

fn to_errno(b: u8) -> Option<Errno> {
    (b != 0).then_some(Errno(b as i32))
}

/// M_ERROR: 1 byte sets both sides, 2 bytes set read and write separately (NOERROR keeps a
/// side, 0 clears it). An M_FLUSH for the sides it put in error goes down, unless all of
/// them were already in error.
fn m_error(q: Q<'_>, st: &HeadState, mp: Mblk) {
    let d = mp.data();
    let (r, w) = match d.len() {
        0 => return,
        1 => (d[0], d[0]),
        _ => (d[0], d[1]),
    };
    if d.len() == 1 && r == 0 {
        return;
    }
    let mut rw = 0u8;
    let mut already = 0u8;
    {
        let mut i = st.inner.lock();
        let HeadInner {
            read_error,
            write_error,
            ..
        } = &mut *i;
        for (byte, slot, bit) in [(r, read_error, FLUSHR), (w, write_error, FLUSHW)] {
            if byte == NOERROR {
                continue;
            }
            if byte == 0 {
                *slot = None;
                continue;
            }
            if slot.is_some() {
                already |= bit;
            }
            *slot = to_errno(byte);
            rw |= bit;
        }
        st.update_write_block(&i);
        let (re, we) = (i.read_error, i.write_error);
        i.events.push(HeadEvent::Error(re, we));
    }
    notify(st);
    if rw != 0 && already != rw {
        if rw & FLUSHR != 0 {
            q.flushq(FLUSHDATA);
        }
        if let Some(mut f) = q.allocb(1) {
            f.set_type(MsgType::M_FLUSH);
            f.write(&[rw]).expect("one byte");
            f.set_flag(MSGNOLOOP);
            q.qreply(f);
        }
    }
}

/// M_SETOPTS: applies the marks and sizes to the head read queue (or a band), then re-checks
/// back-enabling.
fn setopts(q: &Q<'_>, so: &Stroptions) {
    if so.flags & SO_BAND != 0 && so.band > 0 {
        let hi = if so.flags & SO_HIWAT != 0 {
            so.hiwat as usize
        } else {
            q.hiwat()
        };
        let lo = if so.flags & SO_LOWAT != 0 {
            so.lowat as usize
        } else {
            q.lowat()
        };
        q.set_band_marks(so.band, hi, lo);
    } else {
        if so.flags & SO_HIWAT != 0 {
            q.set_hiwat(so.hiwat as usize);
        }
        if so.flags & SO_LOWAT != 0 {
            q.set_lowat(so.lowat as usize);
        }
    }
    if so.flags & (SO_MINPSZ | SO_MAXPSZ) != 0 {
        let min = if so.flags & SO_MINPSZ != 0 {
            so.minpsz as isize
        } else {
            q.minpsz()
        };
        let max = if so.flags & SO_MAXPSZ != 0 {
            so.maxpsz as isize
        } else {
            q.maxpsz()
        };
        q.set_psz(min, max);
    }
    if q.flags() & QWANTW != 0 {
        let lo = q.lowat();
        if q.count() < lo || lo == 0 {
            q.flags.fetch_and(!QWANTW, crate::sync::Ordering::SeqCst);
            q.backenable(0);
        }
    }
}
