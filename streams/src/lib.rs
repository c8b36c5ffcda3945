//! A multithreaded STREAMS framework after the illumos/Solaris DDI.
//!
//! Messages ([`Mblk`]) travel through the queue pairs ([`QueueRef`], [`Q`]) of modules and
//! drivers stacked into a [`Stream`], guarded by inner and outer perimeters. The primitives keep their DDI
//! names (`putnext`, `canputnext`, `qwriter`, `qwait`, `qbufcall`, `qtimeout`, `qprocson`, ...)
//! so that a reader of the man pages finds them; ownership is Rust's: a message is moved,
//! and freeing it is dropping it. `docs/streams.md` states the contract primitive by
//! primitive; the tests in `streams/tests/` check it, one per numbered scenario there.
//!
//! The core is `no_std` + `alloc`. It runs on a [`Platform`]: feature `std` adds
//! [`HostPlatform`] (threads); [`DetPlatform`] is a deterministic single-threaded platform
//! for reproducible tests; the guest brings its own.
//!
//! | module | what it holds |
//! |---|---|
//! | `stream` | [`Stream`]: open, push, insert, pop, close; the head's reads and writes |
//! | `plumb` | a stream's pairs and the protocol that relinks them |
//! | `pair` | a module or driver instance: its queues, perimeters, put path and service runs |
//! | `qcalls` | what a routine calls about its own instance: qprocson/qprocsoff, qwriter, qwait |
//! | `queue` | a queue, [`QueueRef`] and the handle [`Q`]: flow control, putq/getq, putnext, flushing |
//! | `perimeter` | inner and outer perimeters (its big theory statement) |
//! | `head` | the stream head module and [`HeadState`] |
//! | `msg`, `pool`, `cache` | messages, the bounded buffer pool (it reports to its owner through a narrow trait), recycled blocks |
//! | `callback` | qtimeout, qbufcall and signals |
//! | `sched`, `platform`, `host` | [`Streams`] (tasks, timers), the [`Platform`] trait and the [`Scheduler`] it drives, the host platform |
//! | `module`, `error`, `sync` | module definitions and flags, errors, the atomics loom swaps |
//!
//! ```
//! use std::sync::Arc;
//! use streams::*;
//!
//! /// A driver that sends back what is written to it.
//! struct Echo;
//! impl Module for Echo {
//!     fn put(&self, q: Q<'_>, mp: Mblk) {
//!         if q.is_read() { q.putnext(mp) } else { q.qreply(mp) }
//!     }
//! }
//!
//! let s = Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default());
//! let echo = ModuleDef::builder("echo").flags(D_MP | D_MTQPAIR).build(|| Echo).unwrap();
//! let stream = Stream::open(&s, &echo).unwrap();
//! stream.write(b"hi").unwrap();
//! assert!(matches!(stream.read(), ReadResult::Data(m) if m.data() == b"hi"));
//! stream.close().unwrap();
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod cache;
mod callback;
mod error;
mod head;
mod module;
mod msg;
mod pair;
mod perimeter;
mod platform;
mod plumb;
mod pool;
mod qcalls;
mod queue;
mod sched;
mod stream;
mod sync;

#[cfg(all(feature = "std", not(loom)))]
mod host;

pub use callback::{CallbackId, CbState, Signal};
pub use error::{Errno, Error};
pub use head::{
    HeadEvent, HeadState, NOERROR, ReadResult, SO_BAND, SO_HIWAT, SO_LOWAT, SO_MAXPSZ, SO_MINPSZ,
    Stroptions,
};
pub use module::{
    D_MP, D_MTCBSHARED, D_MTOCEXCL, D_MTOCSHARED, D_MTOUTPERIM, D_MTPERMOD, D_MTPERQ,
    D_MTPUTSHARED, D_MTQPAIR, D_MTSAFE, D_MTSVCSHARED, Dev, Module, ModuleDef, ModuleDefBuilder,
    ModuleInfo, OpenHow,
};
pub use msg::{DBLK_REFMAX, FreeRoutine, MSGDELIM, MSGMARK, MSGNOLOOP, Mblk, MsgType};
pub use perimeter::{SQ_BLOCKED, SQ_EVENTS, SQ_EXCL, SQ_FROZEN, SQ_MESSAGES, SQ_WRITER};
pub use platform::{DetPlatform, Platform, Scheduler, Ticks};
pub use pool::{FaultPolicy, PoolConfig, PoolStats};
pub use queue::{
    Entry, FLUSHALL, FLUSHBAND, FLUSHDATA, FLUSHR, FLUSHRW, FLUSHW, INFPSZ, Perim, Q, QB_BACK,
    QB_FULL, QB_WANTW, QBACK, QENAB, QEND, QFULL, QINSERVICE, QNOENB, QREADR, QWANTR, QWANTW,
    QWCLOSE, QueueRef, Side,
};
pub use sched::{FAULTED_FIRES_PER_TICK, Streams, StreamsConfig};
pub use stream::Stream;

#[cfg(all(feature = "std", not(loom)))]
pub use host::{HostPlatform, set_thread_start};

/// Default stream-head high-water mark (`STRHIGH`).
pub const STRHIGH: usize = 5120;
/// Default stream-head low-water mark (`STRLOW`).
pub const STRLOW: usize = 1024;
