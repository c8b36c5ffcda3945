//! One port's traffic in a soak: the host sends a seeded stream in chunks of random size
//! and reads the guest's echo back, comparing every byte with the same stream; both sides
//! pause at random, so that flow control stops and restarts the guest again and again.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use guest_abi::seeded::Xorshift;

/// Counters a port's traffic shares with the soak's progress line.
#[derive(Default)]
pub struct Progress {
    /// Bytes sent to the guest.
    pub sent: AtomicU64,
    /// Bytes of echo read back and found equal.
    pub echoed: AtomicU64,
    /// Sending has ended (`sent` is final).
    pub done_sending: AtomicBool,
}

/// What one port's traffic saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes echoed back and equal.
    pub echoed: u64,
    /// The stream offset of the first echoed byte that differed, if any.
    pub mismatch_at: Option<u64>,
    /// Pauses taken (both directions).
    pub pauses: u64,
    /// What ended the traffic early, if something did.
    pub error: Option<String>,
}

/// The host peer of one port: listens at `listener`, serves the VMM's connection.
pub struct Traffic {
    /// Shared counters.
    pub progress: Arc<Progress>,
    thread: JoinHandle<Outcome>,
}

/// Longest a pause lasts.
const MAX_PAUSE_MS: u64 = 300;
/// One chunk in this many is followed by a pause.
const PAUSE_ONE_IN: u64 = 64;
/// Largest chunk written at once.
const MAX_CHUNK: u64 = 64 << 10;

impl Traffic {
    /// Serves the first connection on `listener`: sends until `until`, then waits (at most
    /// `grace`) for the rest of the echo.
    pub fn start(
        listener: UnixListener,
        seed: u64,
        until: Instant,
        grace: Duration,
    ) -> io::Result<Traffic> {
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("soak-peer".into())
            .spawn(move || match listener.accept() {
                Ok((conn, _)) => serve(conn, seed, until, grace, &p),
                Err(e) => Outcome {
                    error: Some(format!("accept: {e}")),
                    ..Outcome::default()
                },
            })?;
        Ok(Traffic { progress, thread })
    }

    /// Whether the traffic has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the end of the traffic.
    pub fn finish(self) -> Outcome {
        self.thread.join().unwrap_or_else(|_| Outcome {
            error: Some("the peer thread panicked".into()),
            ..Outcome::default()
        })
    }
}

fn serve(
    conn: UnixStream,
    seed: u64,
    until: Instant,
    grace: Duration,
    p: &Arc<Progress>,
) -> Outcome {
    let mut out = Outcome::default();
    let writer = match conn.try_clone() {
        Ok(w) => w,
        Err(e) => {
            out.error = Some(format!("clone: {e}"));
            p.done_sending.store(true, Ordering::Release);
            return out;
        }
    };
    let sender = {
        let p = p.clone();
        std::thread::spawn(move || send(writer, seed, until, &p))
    };
    receive(&conn, seed, grace, p, &mut out);
    let _ = conn.shutdown(std::net::Shutdown::Both);
    match sender.join() {
        Ok((pauses, error)) => {
            out.pauses += pauses;
            out.error = out.error.take().or(error);
        }
        Err(_) => out.error = Some("the sender panicked".into()),
    }
    out.sent = p.sent.load(Ordering::Acquire);
    out
}

/// Sends the stream in random chunks with random pauses until `until`; returns the pauses
/// and an error that ended it early.
fn send(mut w: UnixStream, seed: u64, until: Instant, p: &Progress) -> (u64, Option<String>) {
    let (mut data, mut dice) = (Xorshift::new(seed), Xorshift::new(!seed));
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    let mut pauses = 0;
    let mut error = None;
    while Instant::now() < until {
        let n = 1 + dice.below(MAX_CHUNK) as usize;
        data.fill(&mut buf[..n]);
        if let Err(e) = w.write_all(&buf[..n]) {
            error = Some(format!(
                "write after {} bytes: {e}",
                p.sent.load(Ordering::Relaxed)
            ));
            break;
        }
        p.sent.fetch_add(n as u64, Ordering::AcqRel);
        if dice.below(PAUSE_ONE_IN) == 0 {
            pauses += 1;
            std::thread::sleep(Duration::from_millis(dice.below(MAX_PAUSE_MS)));
        }
    }
    p.done_sending.store(true, Ordering::Release);
    (pauses, error)
}

/// Reads the echo, comparing it with the stream, with random pauses, until every byte sent
/// came back (or nothing came for `grace` once sending ended).
fn receive(mut r: &UnixStream, seed: u64, grace: Duration, p: &Progress, out: &mut Outcome) {
    let (mut expect, mut dice) = (Xorshift::new(seed), Xorshift::new(seed.rotate_left(17)));
    let _ = r.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 << 10];
    let mut want = vec![0u8; 256 << 10];
    let mut last = Instant::now();
    loop {
        let done = p.done_sending.load(Ordering::Acquire);
        if done && out.echoed == p.sent.load(Ordering::Acquire) {
            return;
        }
        if done && last.elapsed() > grace {
            out.error = Some(format!(
                "{} bytes never came back",
                p.sent.load(Ordering::Acquire) - out.echoed
            ));
            return;
        }
        let n = match r.read(&mut buf) {
            Ok(0) => {
                out.error = Some(format!(
                    "the VMM closed the port after {} bytes",
                    out.echoed
                ));
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.error = Some(format!("read after {} bytes: {e}", out.echoed));
                return;
            }
        };
        last = Instant::now();
        expect.fill(&mut want[..n]);
        if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            out.mismatch_at = Some(out.echoed + i as u64);
            return;
        }
        out.echoed += n as u64;
        p.echoed.store(out.echoed, Ordering::Release);
        if dice.below(PAUSE_ONE_IN) == 0 {
            out.pauses += 1;
            std::thread::sleep(Duration::from_millis(dice.below(MAX_PAUSE_MS)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str) -> (UnixListener, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("perimeter-soak-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(name);
        let _ = std::fs::remove_file(&path);
        (UnixListener::bind(&path).unwrap(), path)
    }

    /// An echo the way the guest does it, optionally changing one byte.
    fn echo(path: &std::path::Path, flip_at: Option<usize>) -> JoinHandle<()> {
        let c = UnixStream::connect(path).unwrap();
        std::thread::spawn(move || {
            let (mut r, mut w) = (&c, &c);
            let mut buf = vec![0u8; 65536];
            let mut seen = 0usize;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Some(at) = flip_at.filter(|&a| (seen..seen + n).contains(&a)) {
                    buf[at - seen] ^= 1;
                }
                seen += n;
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        })
    }

    #[test]
    fn every_byte_sent_comes_back_and_is_compared() {
        let (l, path) = listener("ok");
        let until = Instant::now() + Duration::from_millis(300);
        let t = Traffic::start(l, 5, until, Duration::from_secs(5)).unwrap();
        let e = echo(&path, None);
        let out = t.finish();
        e.join().unwrap();
        assert!(out.sent > 0);
        assert_eq!(out.echoed, out.sent, "{out:?}");
        assert_eq!((out.mismatch_at, out.error), (None, None));
    }

    #[test]
    fn a_changed_byte_is_found_where_it_is() {
        let (l, path) = listener("flip");
        let until = Instant::now() + Duration::from_millis(300);
        let t = Traffic::start(l, 6, until, Duration::from_secs(5)).unwrap();
        let e = echo(&path, Some(1000));
        let out = t.finish();
        e.join().unwrap();
        assert_eq!(out.mismatch_at, Some(1000), "{out:?}");
    }
}
