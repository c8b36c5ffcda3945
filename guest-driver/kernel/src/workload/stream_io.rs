//! Blocking-style I/O on a port's stream for the workloads, built on the platform's idle
//! loop: waiting runs deferred STREAMS work and interrupt handlers, and halts the vCPU.

use crate::platform::{self, idle_until};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use streams::{Errno, Mblk, ReadResult, Stream, Streams};

/// What a non-blocking look at a stream found.
pub enum Poll {
    /// A message.
    Data(Mblk),
    /// Nothing yet.
    Nothing,
    /// Hung up: no more data will come.
    Eof,
}

/// Reads without blocking.
pub fn poll(st: &Stream) -> Result<Poll, Errno> {
    match st.read() {
        ReadResult::Data(m) => Ok(Poll::Data(m)),
        ReadResult::WouldBlock => Ok(Poll::Nothing),
        ReadResult::Eof => Ok(Poll::Eof),
        ReadResult::Error(e) => Err(e),
    }
}

/// The next message; `None` after a hang-up.
pub fn recv(st: &Stream) -> Result<Option<Mblk>, Errno> {
    let mut got = None;
    idle_until(|| {
        got = Some(poll(st));
        !matches!(got, Some(Ok(Poll::Nothing)))
    });
    match got.expect("idle_until checked at least once") {
        Ok(Poll::Data(m)) => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A buffer-wait in progress: set when the stream head's bufcall fires.
pub struct BufWait(Arc<AtomicBool>);

impl BufWait {
    /// Whether the awaited buffer is likely available now.
    pub fn ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Allocates `len` bytes (length set, contents unspecified) or, when the pool refuses,
/// registers a bufcall and returns the wait.
pub fn try_alloc(s: &Streams, st: &Stream, len: usize) -> Result<Mblk, BufWait> {
    if let Some(mut m) = s.allocb(len) {
        m.set_ptrs(0, len).expect("allocb gave at least len bytes");
        return Ok(m);
    }
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let wake = move || {
        f.store(true, Ordering::Release);
        platform::notify();
    };
    if st.bufcall(len, wake).is_err() {
        // No bufcall slot: try again on the next pass.
        flag.store(true, Ordering::Release);
    }
    Err(BufWait(flag))
}

/// Allocates `len` bytes, waiting through bufcalls while the pool refuses.
pub fn alloc(s: &Streams, st: &Stream, len: usize) -> Mblk {
    loop {
        match try_alloc(s, st, len) {
            Ok(m) => return m,
            Err(w) => idle_until(|| w.ready()),
        }
    }
}

/// Sends `m` once flow control lets it pass: EIO after a hang-up.
pub fn send(st: &Stream, m: Mblk) -> Result<(), Errno> {
    idle_until(|| st.canwrite() || st.head().is_hungup());
    st.putmsg(m)
}
