//! The host side of a benchmark port: a thread behind a listening UNIX socket that the VMM
//! (perimeter's `connect:` backend, QEMU's client-mode socket chardev) connects to. Both VMMs
//! get the same peers, so neither gains from an in-process backend.

use device_model::console::backend::{PATTERN_CHUNK, PATTERN_PERIOD, pattern_byte};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a peer does with its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads and discards, counting and checksumming (CRC-32).
    Sink,
    /// As [`Role::Sink`], but sleeps `pause` after every read of at most `chunk` bytes: a
    /// reader slower than the guest.
    SlowSink { chunk: usize, pause: Duration },
    /// Writes the `pattern` backend's stream (byte i = i mod [`PATTERN_PERIOD`]) until the VMM
    /// goes away.
    Source,
    /// Writes back whatever it reads.
    Echo,
}

/// What a peer saw on its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Bytes read from the VMM.
    pub bytes_in: u64,
    /// Bytes written to the VMM.
    pub bytes_out: u64,
    /// CRC-32 of the bytes read.
    pub crc_in: u32,
}

/// A listening peer; [`Peer::finish`] collects its report once the VMM has exited.
pub struct Peer {
    path: PathBuf,
    thread: JoinHandle<PeerReport>,
}

impl Peer {
    /// Listens at `path` (replacing a stale socket) and serves the first connection as `role`.
    pub fn listen(path: &Path, role: Role) -> io::Result<Peer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let thread = std::thread::Builder::new()
            .name("bench-peer".into())
            .spawn(move || match listener.accept() {
                Ok((conn, _)) => serve(conn, role),
                Err(_) => PeerReport::default(),
            })?;
        Ok(Peer {
            path: path.to_path_buf(),
            thread,
        })
    }

    /// Waits for the peer to see the end of its connection (call after the VMM exited). A
    /// peer the VMM never connected to is woken by a connection of our own that says nothing
    /// (accepted after the VMM's, if the VMM connected: the backlog is first in, first out).
    pub fn finish(self) -> PeerReport {
        if !self.thread.is_finished() {
            // Harmless when the VMM did connect: nobody accepts this one.
            let _ = UnixStream::connect(&self.path);
        }
        let report = self.thread.join().unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        report
    }
}

fn serve(mut conn: UnixStream, role: Role) -> PeerReport {
    let mut r = PeerReport::default();
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    match role {
        Role::Sink | Role::SlowSink { .. } | Role::Echo => loop {
            let want = match role {
                Role::SlowSink { chunk, .. } => chunk.clamp(1, buf.len()),
                _ => buf.len(),
            };
            let n = match conn.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            r.bytes_in += n as u64;
            match role {
                Role::Echo => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    r.bytes_out += n as u64;
                }
                Role::SlowSink { pause, .. } => {
                    crc.update(&buf[..n]);
                    std::thread::sleep(pause);
                }
                _ => crc.update(&buf[..n]),
            }
        },
        Role::Source => {
            // A whole number of periods per write keeps every write the same bytes.
            let period = PATTERN_CHUNK / PATTERN_PERIOD * PATTERN_PERIOD;
            let block: Vec<u8> = (0..period as u64).map(pattern_byte).collect();
            while conn.write_all(&block).is_ok() {
                r.bytes_out += block.len() as u64;
            }
        }
    }
    r.crc_in = crc.finalize();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("perimeter-peer-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sink_counts_and_checksums() {
        let path = dir().join("sink");
        let peer = Peer::listen(&path, Role::Sink).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"hello, world").unwrap();
        drop(c);
        let r = peer.finish();
        assert_eq!(r.bytes_in, 12);
        assert_eq!(r.crc_in, crc32fast::hash(b"hello, world"));
    }

    #[test]
    fn echo_returns_every_byte() {
        let path = dir().join("echo");
        let peer = Peer::listen(&path, Role::Echo).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(&[7u8; 5000]).unwrap();
        let mut back = vec![0u8; 5000];
        c.read_exact(&mut back).unwrap();
        assert!(back.iter().all(|&b| b == 7));
        drop(c);
        assert_eq!(peer.finish().bytes_out, 5000);
    }

    #[test]
    fn source_sends_the_pattern_from_byte_zero() {
        let path = dir().join("source");
        let peer = Peer::listen(&path, Role::Source).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        let mut got = vec![0u8; 100_000];
        c.read_exact(&mut got).unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern_byte(i as u64))
        );
        drop(c);
        assert!(peer.finish().bytes_out >= 100_000);
    }

    #[test]
    fn a_peer_nobody_connects_to_still_finishes() {
        let path = dir().join("idle");
        let r = Peer::listen(&path, Role::Sink).unwrap().finish();
        assert_eq!(r.bytes_in, 0);
    }
}
