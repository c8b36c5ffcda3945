//! COM1's input thread: reads the host's side (stdin, or the socket's client), and moves
//! what it read into the UART's receive FIFO as the guest makes room. It holds at most one
//! read's worth ([`CHUNK`]) while it waits, so a guest that never reads COM1 costs nothing
//! more; it checks for the end of the run every [`POLL`].

use super::SerialPort;
use super::backend::Client;
use crate::error::Error;
use device_model::console::backend::{pty, terminal};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes read from the host in one go (four times the receive FIFO).
const CHUNK: usize = 256;
/// How often a waiting input thread checks whether the run ended.
const POLL: Duration = Duration::from_millis(100);

/// Where input comes from.
pub(super) enum Input {
    /// None: output only.
    None,
    /// A duplicate of perimeter's stdin; on a terminal (put in raw mode when the thread
    /// starts) the escape key is watched.
    Stdin(File),
    /// A socket's clients, one at a time.
    Socket {
        /// Non-blocking.
        listener: UnixListener,
        /// The client now, shared with the output side.
        client: Client,
    },
}

/// The running thread.
pub(super) struct InputThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
    terminal: bool,
}

impl InputThread {
    /// Starts moving `input` into `port`; none for [`Input::None`].
    pub(super) fn start(
        input: Input,
        port: Arc<SerialPort>,
        quit: Box<dyn Fn() + Send>,
    ) -> Result<Option<Self>, Error> {
        let terminal = match &input {
            Input::None => return Ok(None),
            Input::Stdin(f) => match terminal::enter_raw(f).map_err(|source| Error::Serial {
                what: "stdio: stdin's terminal".into(),
                source,
            })? {
                terminal::Stdin::Raw => true,
                terminal::Stdin::NotATerminal => false,
                terminal::Stdin::Background => {
                    log::info!("COM1: stdin is the terminal of a background job: not read");
                    return Ok(None);
                }
            },
            Input::Socket { .. } => false,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let spawned =
            std::thread::Builder::new()
                .name("com1-in".into())
                .spawn(move || match input {
                    Input::None => {}
                    Input::Stdin(stdin) => stdin_loop(&stdin, terminal, &port, &*quit, &s),
                    Input::Socket { listener, client } => {
                        socket_loop(&listener, &client, &port, &s)
                    }
                });
        match spawned {
            Ok(handle) => Ok(Some(InputThread {
                stop,
                handle,
                terminal,
            })),
            Err(source) => {
                if terminal {
                    terminal::restore();
                }
                Err(Error::Host {
                    what: "spawning COM1's input thread",
                    source,
                })
            }
        }
    }

    /// Ends the thread (within [`POLL`]) and puts the terminal back.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.handle.join();
        if self.terminal {
            terminal::restore();
        }
    }
}

/// Moves all of `bytes` into the FIFO, waiting for the guest to make room; false if the run
/// ended first.
fn feed(port: &SerialPort, mut bytes: &[u8], stop: &AtomicBool) -> bool {
    while !bytes.is_empty() {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        match port.enqueue(bytes) {
            0 => {
                port.wait_for_room(POLL);
            }
            n => bytes = &bytes[n..],
        }
    }
    true
}

/// Reads `from` if it has something within [`POLL`]: `None` when nothing came, `Some(0)` at
/// its end (or on an error), else how many bytes.
fn read_ready<F: AsFd>(from: &F, buf: &mut [u8]) -> Option<usize>
where
    for<'a> &'a F: Read,
{
    if !pty::readable(from, POLL.as_millis() as i32) {
        return None;
    }
    let mut reader = from;
    match reader.read(buf) {
        Ok(n) => Some(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) =>
        {
            None
        }
        Err(e) => {
            log::warn!("COM1: reading its input failed: {e}");
            Some(0)
        }
    }
}

fn stdin_loop(stdin: &File, terminal: bool, port: &SerialPort, quit: &dyn Fn(), stop: &AtomicBool) {
    let mut buf = [0u8; CHUNK];
    let mut escape = terminal::Escape::default();
    let mut keys = Vec::with_capacity(CHUNK + 1);
    while !stop.load(Ordering::Acquire) {
        let n = match read_ready(stdin, &mut buf) {
            None => continue,
            // The end of stdin: COM1 has no more input to give.
            Some(0) => return,
            Some(n) => n,
        };
        let bytes = if terminal {
            keys.clear();
            if escape.filter(&buf[..n], &mut keys) {
                let _ = feed(port, &keys, stop);
                log::info!("COM1: Ctrl-A x: quitting");
                quit();
                return;
            }
            &keys[..]
        } else {
            &buf[..n]
        };
        if !feed(port, bytes, stop) {
            return;
        }
    }
}

/// Serves a socket's clients one at a time: `client` is the output side's handle, `reader`
/// this thread's own descriptor of the same client.
fn socket_loop(listener: &UnixListener, client: &Client, port: &SerialPort, stop: &AtomicBool) {
    let set = |c: Option<UnixStream>| *client.lock().unwrap_or_else(|e| e.into_inner()) = c;
    let mut buf = [0u8; CHUNK];
    let mut reader: Option<UnixStream> = None;
    while !stop.load(Ordering::Acquire) {
        let Some(r) = &reader else {
            if !pty::readable(listener, POLL.as_millis() as i32) {
                continue;
            }
            let Ok((c, _)) = listener.accept() else {
                continue;
            };
            match (c.set_nonblocking(true), c.try_clone()) {
                (Ok(()), Ok(r)) => {
                    port.counters.connects.fetch_add(1, Ordering::Relaxed);
                    log::info!("COM1: a client connected");
                    set(Some(c));
                    reader = Some(r);
                }
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("COM1: a client came but cannot be used: {e}")
                }
            }
            continue;
        };
        match read_ready(r, &mut buf) {
            None => {}
            Some(0) => {
                log::info!("COM1: its client left");
                set(None);
                reader = None;
            }
            Some(n) if !feed(port, &buf[..n], stop) => return,
            Some(_) => {}
        }
    }
}
