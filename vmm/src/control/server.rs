//! The control socket's server: one thread, woken by epoll (rust-vmm's `event-manager`) when
//! the listening socket or a client has something, so that many clients are served at once
//! without a thread each and without polling.
//!
//! It runs beside the device's event loop rather than in it: a `stats` answer is serialised
//! here, never between a guest's queue notification and its relay.
//!
//! Every client is non-blocking. Its bytes are split into lines ([`Lines`]); each complete
//! line is carried out at once, in order, and its answer queued; answers go out as the client
//! takes them. A client whose unread answers pass [`MAX_PENDING`] bytes is let go (counted in
//! the log). Every request received is carried out, even when its client has gone by the
//! time the answer is written (a script may send `remove` and close).

use super::protocol::{Context, Request, failure};
use super::{MAX_CLIENTS, MAX_LINE};
use crate::error::Outcome;
use event_manager::{EventOps, EventSubscriber, Events};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;
use std::sync::mpsc::Sender;
use vmm_sys_util::epoll::EventSet;

/// Unread answer bytes a client may leave before it is let go.
pub const MAX_PENDING: usize = 1 << 20;

/// Splits a client's bytes into lines no longer than [`MAX_LINE`].
#[derive(Default)]
pub(super) struct Lines {
    pub(super) buf: Vec<u8>,
    /// The current line ran past [`MAX_LINE`]: skip to its end.
    skipping: bool,
}

/// One line as received.
#[derive(Debug, PartialEq)]
pub(super) enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

impl Lines {
    /// Adds `bytes` and returns every line they complete.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if std::mem::take(&mut self.skipping) {
                    out.push(Line::TooLong);
                } else {
                    let raw = std::mem::take(&mut self.buf);
                    out.push(match String::from_utf8(raw) {
                        Ok(t) => Line::Text(t),
                        Err(_) => Line::NotUtf8,
                    });
                }
            } else if !self.skipping {
                if self.buf.len() + 1 >= MAX_LINE {
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }
}

struct Client {
    stream: UnixStream,
    lines: Lines,
    /// Answers not yet written.
    out: Vec<u8>,
}

/// What happened to a client in one round of events.
enum State {
    /// Keep it, waiting for input (and for room, when answers wait).
    Open { wants_out: bool },
    /// It left or failed: forget it.
    Gone,
}

/// The listening socket and its clients.
pub(super) struct Server {
    listener: UnixListener,
    ctx: Context,
    /// Where `shutdown` ends the run.
    outcome: Sender<Outcome>,
    clients: Mutex<HashMap<RawFd, Client>>,
}

impl Server {
    pub(super) fn new(listener: UnixListener, ctx: Context, outcome: Sender<Outcome>) -> Self {
        Server {
            listener,
            ctx,
            outcome,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn answer(&self, line: Line) -> Value {
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong => return failure(&format!("a request is at most {MAX_LINE} bytes")),
            Line::NotUtf8 => return failure("a request is UTF-8 text"),
        };
        let req = match Request::parse(&text) {
            Ok(req) => req,
            Err(why) => return failure(&why),
        };
        let answer = self.ctx.answer(&req);
        if req == Request::Shutdown {
            let _ = self.outcome.send(Outcome::Shutdown);
        }
        answer
    }

    fn accept(&self, ops: &mut EventOps) {
        loop {
            let c = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket: accepting a client failed ({e})");
                    return;
                }
            };
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients.len() >= MAX_CLIENTS {
                log::warn!("control socket: a client turned away ({MAX_CLIENTS} are connected)");
                let busy = failure(&format!("{MAX_CLIENTS} clients are connected already"));
                let _ = (&c).write_all(format!("{busy}\n").as_bytes());
                continue;
            }
            if c.set_nonblocking(true).is_err() || ops.add(Events::new(&c, EventSet::IN)).is_err() {
                log::warn!("control socket: a client could not be watched; it is let go");
                continue;
            }
            log::debug!("control socket: a client connected");
            clients.insert(
                c.as_raw_fd(),
                Client {
                    stream: c,
                    lines: Lines::default(),
                    out: Vec::new(),
                },
            );
        }
    }

    /// Reads what `c` sent, carries out its complete lines, and writes what it will take.
    fn serve(&self, c: &mut Client) -> State {
        let mut buf = [0u8; 4096];
        let mut gone = false;
        loop {
            match (&c.stream).read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => {
                    for line in c.lines.push(&buf[..n]) {
                        let answer = self.answer(line);
                        match answer["error"].as_str() {
                            Some(why) => log::warn!("control socket: a request refused: {why}"),
                            None => log::info!("control socket: {answer}"),
                        }
                        if c.out.len() <= MAX_PENDING {
                            c.out.extend_from_slice(format!("{answer}\n").as_bytes());
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        while !c.out.is_empty() {
            match (&c.stream).write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return State::Gone,
            }
        }
        if c.out.len() > MAX_PENDING {
            log::warn!(
                "control socket: a client left more than {MAX_PENDING} bytes of answers unread; \
                 it is let go"
            );
            return State::Gone;
        }
        if gone {
            return State::Gone;
        }
        State::Open {
            wants_out: !c.out.is_empty(),
        }
    }
}

impl EventSubscriber for Server {
    fn init(&self, ops: &mut EventOps) {
        ops.add(Events::new(&self.listener, EventSet::IN))
            .expect("a fresh epoll accepts the listening socket");
    }

    fn process(&self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            return self.accept(ops);
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = clients.get_mut(&fd) else {
            return;
        };
        match self.serve(c) {
            State::Open { wants_out } => {
                let set = if wants_out {
                    EventSet::IN | EventSet::OUT
                } else {
                    EventSet::IN
                };
                let _ = ops.modify(Events::new(&c.stream, set));
            }
            State::Gone => {
                let _ = ops.remove(Events::new(&c.stream, EventSet::IN));
                clients.remove(&fd);
                log::debug!("control socket: a client left");
            }
        }
    }
}
