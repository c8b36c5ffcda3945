//! A port's output thread: guest bytes from the stream head to the backend.
//!
//! Whatever the stream head holds goes out in one `writev` (up to [`BATCH_MSGS`] messages and
//! [`BATCH_BYTES`] bytes): one system call and one wake-up for many guest buffers, which is
//! what small messages need. A message is freed (its guest buffer returned) only once all of
//! its bytes were written; the unwritten rest of a partial write stays for the next one.
//!
//! Messages over lent guest buffers ([`crate::console::lent`]) are read only with the port's
//! gate held shared, and never across a wait: a client socket is written without blocking
//! (the thread waits for room with the gate released); other writers write a copy of each
//! batch (whose messages, and so the guest's buffers, are freed once it is written), and the
//! echo puts host copies back down where the pool allows. A reset or a removal runs
//! [`reclaim`], which copies what the thread holds.

use super::{IoState, Sink, lock};
use crate::console::PortCounters;
use crate::console::stages::HostPoint;
use crate::logging::limited;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use streams::{Mblk, ReadResult};

/// Most messages gathered for one write.
pub const BATCH_MSGS: usize = 256;
/// Most bytes gathered for one write.
pub const BATCH_BYTES: usize = 1 << 20;
/// Most buffers one `writev` takes (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Writes from the front of `held` in one `writev`; frees what went out completely and
/// trims a partly written message. Returns the bytes written.
pub fn write_batch(w: &mut impl Write, held: &mut VecDeque<Mblk>) -> io::Result<u64> {
    let n = {
        let slices: Vec<IoSlice<'_>> = held
            .iter()
            .flat_map(|m| m.blocks())
            .filter(|b| !b.is_empty())
            .take(IOV_MAX)
            .map(|b| IoSlice::new(b.data()))
            .collect();
        if slices.is_empty() {
            held.clear();
            return Ok(0);
        }
        loop {
            match w.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    };
    let mut left = n;
    while let Some(m) = held.front_mut() {
        let size = m.msgdsize();
        if size > left {
            consume(m, left);
            break;
        }
        left -= size;
        held.pop_front(); // freeing returns the guest's buffer
    }
    Ok(n as u64)
}

/// Drops the first `n` bytes of `m`'s data.
fn consume(m: &mut Mblk, mut n: usize) {
    let mut b = Some(m);
    while let Some(blk) = b {
        if n == 0 {
            return;
        }
        let take = n.min(blk.len());
        let (r, w) = (blk.rptr(), blk.wptr());
        blk.set_ptrs(r + take, w).expect("within the block");
        n -= take;
        b = blk.cont_mut();
    }
}

/// Takes what the stream head holds into `held` (checksummed as it is taken, in stream order,
/// unless the sink is a client), up to the batch limits unless `all`.
fn take_from_head(st: &IoState, held: &mut VecDeque<Mblk>, all: bool) {
    let mut bytes: usize = held.iter().map(Mblk::msgdsize).sum();
    while all || (held.len() < BATCH_MSGS && bytes < BATCH_BYTES) {
        match st.stream.read() {
            ReadResult::Data(m) => {
                if st.checksummed_out {
                    let mut crc = lock(&st.crc);
                    for b in m.blocks() {
                        crc.update(b.data());
                    }
                }
                bytes += m.msgdsize();
                held.push_back(m);
            }
            ReadResult::WouldBlock => return,
            ReadResult::Eof | ReadResult::Error(_) => {
                st.head_ended.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// Drops (and counts) messages over guest buffers of an earlier generation: on their way up
/// when the device was reset, so their bytes are the guest's again.
fn drop_stale(st: &IoState, held: &mut VecDeque<Mblk>) {
    let lent = &st.port.lent;
    held.retain(|m| {
        let stale = lent.is_stale(m);
        if stale {
            let c = &st.port.counters;
            c.drops.fetch_add(m.msgdsize() as u64, Ordering::Relaxed);
            limited!(
                log::Level::Warn,
                "port {}: {} bytes of guest output from before a device reset dropped (counted \
                 in drops)",
                st.name(),
                m.msgdsize()
            );
        }
        !stale
    });
}

/// A reset or removal ends the port's loans (called with its gate held exclusively): what
/// the head and the output thread hold is copied into host memory. What cannot be copied (no
/// memory in the pool) is dropped and counted after a `reset`; after a removal it stays as it
/// is (the ring is live) and goes out, its buffer returned once written.
pub(super) fn reclaim(st: &IoState, reset: bool) {
    // A writer's batch is already copied: its originals only hold the guest's buffers.
    lock(&st.inflight).clear();
    let mut held = lock(&st.held);
    take_from_head(st, &mut held, true);
    let lent = &st.port.lent;
    held.retain_mut(|m| {
        if !lent.is_lent(m) {
            return true;
        }
        match m.copymsg() {
            Some(c) => {
                *m = c;
                true
            }
            None if !reset => true,
            None => {
                let c = &st.port.counters;
                c.drops.fetch_add(m.msgdsize() as u64, Ordering::Relaxed);
                limited!(
                    log::Level::Warn,
                    "port {}: no host memory to keep {} bytes of guest output across a device \
                     reset; dropped (counted in drops)",
                    st.name(),
                    m.msgdsize()
                );
                false
            }
        }
    });
    st.held_bytes.store(bytes_of(&held), Ordering::Release);
}

fn bytes_of(q: &VecDeque<Mblk>) -> u64 {
    q.iter().map(|m| m.msgdsize() as u64).sum()
}

/// What the output thread writes with the gate released.
#[derive(Default)]
struct Copies {
    /// Echo: host copies (or, when the pool had none, originals) to put back down.
    ready: VecDeque<Mblk>,
    /// Writers: the bytes of the messages in [`IoState::inflight`], and how many went out.
    bytes: Vec<u8>,
    sent: usize,
}

impl Copies {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.sent == self.bytes.len()
    }

    fn left(&self) -> u64 {
        bytes_of(&self.ready) + (self.bytes.len() - self.sent) as u64
    }
}

/// Runs until the stream ends or the backend stops; what it took from the stream head but
/// could not write is counted as undelivered ([`IoState::unwritten`]).
pub(super) fn output_loop(st: &Arc<IoState>, sink: Sink) {
    let mut copies = Copies::default();
    run(st, sink, &mut copies);
    let left = bytes_of(&lock(&st.held)) + copies.left();
    st.held_bytes.store(0, Ordering::Release);
    st.copy_bytes.store(0, Ordering::Release);
    st.unwritten.store(left, Ordering::Release);
}

/// What the thread does once it let go of the gate.
enum Next {
    /// Nothing to do: wait for the head.
    Idle,
    /// Look again at once.
    Again,
    /// Wait until the client can take more.
    Room(std::sync::Arc<std::os::unix::net::UnixStream>),
    /// Wait a moment (no client).
    Pause,
    /// The stream ended and everything went out, or the backend stops.
    Stop,
}

/// [`write_batch`] to the client, stamped first: its reply may be read before the write
/// returns.
fn write_to_client(
    st: &IoState,
    client: &UnixStream,
    held: &mut VecDeque<Mblk>,
) -> io::Result<u64> {
    st.port.stages.stamp(HostPoint::Written);
    write_batch(&mut &*client, held)
}

/// One step with the gate held shared: drop stale messages, gather from the head, and either
/// write to a client without blocking or make the copies written after the gate is released.
fn step(st: &IoState, sink: &mut Sink, copies: &mut Copies) -> Next {
    let _gate = st.port.lent.read();
    let mut held = lock(&st.held);
    drop_stale(st, &mut held);
    let client = match sink {
        Sink::Client => st.writable_client(),
        _ => None,
    };
    let can_take = !matches!(sink, Sink::Client) || client.is_some();
    if can_take && copies.is_empty() {
        take_from_head(st, &mut held, false);
    }
    let next = if !copies.is_empty() {
        Next::Again // copies to write first
    } else if held.is_empty() {
        if st.head_ended.load(Ordering::Acquire) || st.stopping() {
            Next::Stop
        } else {
            Next::Idle
        }
    } else {
        match sink {
            Sink::Discard => {
                let n = bytes_of(&held);
                held.clear();
                PortCounters::add(&st.port.counters.out_bytes, n);
                Next::Again
            }
            Sink::Echo => {
                // Copied where the pool allows; an original that goes back down instead is
                // dropped by the receive path if a reset makes it stale.
                for m in held.iter_mut() {
                    if st.port.lent.is_lent(m)
                        && let Some(c) = m.copymsg()
                    {
                        *m = c;
                    }
                }
                st.port.stages.stamp(HostPoint::Written);
                copies.ready.extend(held.drain(..));
                Next::Again
            }
            Sink::Writer(_) => {
                // The bytes are copied out; the messages (and the guest's buffers) are kept
                // until the copy is written, so a slow writer still holds the guest back.
                copies.bytes.clear();
                copies.sent = 0;
                let mut inflight = lock(&st.inflight);
                for m in held.drain(..) {
                    for b in m.blocks() {
                        copies.bytes.extend_from_slice(b.data());
                    }
                    inflight.push_back(m);
                }
                Next::Again
            }
            Sink::Client => match client {
                None if st.stopping() => Next::Stop, // nobody to take it: left undelivered
                None => Next::Pause,
                Some(client) => match write_to_client(st, &client, &mut held) {
                    Ok(n) => {
                        PortCounters::add(&st.port.counters.out_bytes, n);
                        Next::Again
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Room(client),
                    Err(e) => {
                        log::warn!(
                            "port {}: writing to the client failed ({e}); it is let go",
                            st.name()
                        );
                        // The input thread reads what the client sent, then lets it go; the
                        // rest goes to the next client.
                        st.client_write_failed(&client);
                        Next::Again
                    }
                },
            },
        }
    };
    st.held_bytes.store(bytes_of(&held), Ordering::Release);
    st.copy_bytes.store(copies.left(), Ordering::Release);
    next
}

fn run(st: &Arc<IoState>, mut sink: Sink, copies: &mut Copies) {
    let c = &st.port.counters;
    loop {
        match step(st, &mut sink, copies) {
            Next::Stop => return,
            Next::Idle => st.out_wake.wait(Duration::from_millis(100)),
            Next::Pause => {
                if st.stopping() {
                    return;
                }
                st.out_wake.wait(Duration::from_millis(100));
            }
            Next::Room(client) => {
                if st.stopping() {
                    return;
                }
                super::pty::writable(&*client, 100);
            }
            Next::Again => {}
        }
        // Copies: written with the gate released, blocking as the sink likes.
        if copies.is_empty() {
            continue;
        }
        match &mut sink {
            Sink::Echo => {
                if !st.stream.canwrite() {
                    if st.stopping() {
                        return; // the guest stopped reading: left in the stream
                    }
                    st.in_wake.wait(Duration::from_millis(100));
                    continue;
                }
                let m = copies.ready.pop_front().expect("not empty");
                let n = m.msgdsize() as u64;
                st.port.stages.stamp(HostPoint::Read);
                if st.stream.putmsg(m).is_err() {
                    return; // hung up
                }
                c.out_bytes.fetch_add(n, Ordering::Relaxed);
                st.copy_bytes.store(copies.left(), Ordering::Release);
            }
            Sink::Writer(f) => match f.write(&copies.bytes[copies.sent..]) {
                Ok(n) if n > 0 => {
                    copies.sent += n;
                    c.out_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    st.copy_bytes.store(copies.left(), Ordering::Release);
                    if copies.sent == copies.bytes.len() {
                        lock(&st.inflight).clear(); // the guest's buffers go back
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => {
                    // A file or terminal that fails: keep the bytes and try again later.
                    let e = r.err().map_or("wrote nothing".into(), |e| e.to_string());
                    limited!(
                        log::Level::Warn,
                        "port {}: writing failed ({e}); the bytes are kept and written again",
                        st.name()
                    );
                    if st.stopping() {
                        return;
                    }
                    st.out_wake.wait(Duration::from_millis(100));
                }
            },
            Sink::Discard | Sink::Client => unreachable!("only echo and writers make copies"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use streams::{DetPlatform, Streams, StreamsConfig};

    /// Takes at most `limit` bytes per call, across buffers like a socket does.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.limit - n).min(b.len());
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn msg(s: &Streams, bytes: &[u8]) -> Mblk {
        let mut m = s.allocb(bytes.len()).unwrap();
        m.write(bytes).unwrap();
        m
    }

    #[test]
    fn a_batch_goes_out_in_one_write_and_partial_writes_keep_order() {
        let s = Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default());
        let mut two = msg(&s, b"cd");
        two.linkb(msg(&s, b"ef"));
        let batch = |s: &Streams, two: &Mblk| -> VecDeque<Mblk> {
            [msg(s, b"ab"), two.dupmsg().unwrap(), msg(s, b"gh")].into()
        };
        let mut all = Trickle {
            got: Vec::new(),
            limit: usize::MAX,
            calls: 0,
        };
        let mut held = batch(&s, &two);
        assert_eq!(write_batch(&mut all, &mut held).unwrap(), 8);
        assert!(held.is_empty());
        assert_eq!((all.got.as_slice(), all.calls), (&b"abcdefgh"[..], 1));
        let mut held = batch(&s, &two);

        let mut slow = Trickle {
            got: Vec::new(),
            limit: 3,
            calls: 0,
        };
        while !held.is_empty() {
            write_batch(&mut slow, &mut held).unwrap();
        }
        assert_eq!(slow.got, b"abcdefgh");
        assert_eq!(slow.calls, 3);
    }
}
