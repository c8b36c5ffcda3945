//! A port's output thread: guest bytes from the stream head to the backend.
//!
//! Whatever the stream head holds goes out in one `writev` (up to [`BATCH_MSGS`] messages and
//! [`BATCH_BYTES`] bytes): one system call and one wake-up for many guest buffers, which is
//! what small messages need. A message is freed (its guest buffer returned) only once all of
//! its bytes were written; the unwritten rest of a partial write stays for the next one.

use super::{IoState, Sink, lock};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
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

/// Runs until the stream ends or the backend stops; what it took from the stream head but
/// could not write is counted as undelivered ([`IoState::unwritten`]).
pub(super) fn output_loop(st: &IoState, sink: Sink) {
    let mut held: VecDeque<Mblk> = VecDeque::new();
    run(st, sink, &mut held);
    let left: usize = held.iter().map(Mblk::msgdsize).sum();
    st.unwritten.store(left as u64, Ordering::Release);
}

fn run(st: &IoState, mut sink: Sink, held: &mut VecDeque<Mblk>) {
    let c = &st.port.counters;
    let mut ended = false;
    loop {
        // Gather what the stream head holds (checksummed as it is taken, in stream order);
        // a socket without a client leaves it there, where flow control sees it.
        let mut bytes: usize = held.iter().map(Mblk::msgdsize).sum();
        let can_write = !matches!(sink, Sink::Client) || st.writable_client().is_some();
        while can_write && !ended && held.len() < BATCH_MSGS && bytes < BATCH_BYTES {
            match st.stream.read() {
                ReadResult::Data(m) => {
                    if !matches!(sink, Sink::Client) {
                        let mut crc = lock(&st.crc);
                        for b in m.blocks() {
                            crc.update(b.data());
                        }
                    }
                    bytes += m.msgdsize();
                    held.push_back(m);
                }
                ReadResult::WouldBlock => break,
                ReadResult::Eof | ReadResult::Error(_) => ended = true,
            }
        }
        if held.is_empty() {
            if ended || st.stopping() {
                return;
            }
            st.out_wake.wait(Duration::from_millis(100));
            continue;
        }
        if matches!(sink, Sink::Echo) {
            if !st.stream.canwrite() {
                if st.stopping() {
                    return; // the guest stopped reading: left in the stream
                }
                st.in_wake.wait(Duration::from_millis(100));
                continue;
            }
            let m = held.pop_front().expect("not empty");
            let n = m.msgdsize() as u64;
            if st.stream.putmsg(m).is_err() {
                return; // hung up
            }
            c.out_bytes.fetch_add(n, Ordering::Relaxed);
            continue;
        }
        let result = match &mut sink {
            Sink::Discard | Sink::Echo => {
                let n: usize = held.drain(..).map(|m| m.msgdsize()).sum();
                Ok(n as u64)
            }
            Sink::Writer(f) => write_batch(f, held),
            Sink::Client => match st.writable_client() {
                None if st.stopping() => return, // nobody to take it: left undelivered
                None => {
                    st.out_wake.wait(Duration::from_millis(100));
                    continue;
                }
                Some(client) => {
                    let r = write_batch(&mut &*client, held);
                    if r.is_err() {
                        // The input thread reads what the client sent, then lets it go.
                        st.client_write_failed(&client);
                        continue; // the rest goes to the next client
                    }
                    r
                }
            },
        };
        match result {
            Ok(n) => {
                c.out_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                // A file or terminal that fails: keep the bytes and try again later.
                if st.stopping() {
                    return;
                }
                st.out_wake.wait(Duration::from_millis(100));
            }
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
