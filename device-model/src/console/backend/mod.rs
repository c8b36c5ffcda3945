//! Port backends: the host side of each port, run by two threads per port (output: the
//! stream head to the sink; input: the source into the stream head). Each thread blocks only
//! on its own port, so a stuck backend never stalls another port, the event loop or a vCPU.
//! Output waits at the stream head while nobody can take it: flow control throttles the
//! guest instead of dropping bytes.

mod output;
pub mod pty;
mod spec;
pub mod terminal;

pub use output::{BATCH_BYTES, BATCH_MSGS};
pub use spec::{BackendKind, FaultSpec, PortSpec, check_ports, parse_fault, path_key};

use super::port::lock;
use super::stages::HostPoint;
use super::{ConsoleError, ConsoleHandle, PortShared};
use crate::logging::limited;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use streams::{HostPlatform, Mblk, Stream};

/// Bytes read from a backend in one go.
pub const READ_CHUNK: usize = 64 * 1024;
/// Most bytes kept from a client that left (what it sent that was not yet read); the rest,
/// if any, is counted in `drops`. A client that closed cannot add more, so this only bounds
/// a kernel's socket buffer.
pub const LEFTOVER_MAX: usize = 8 << 20;
/// The pattern backend's period: byte `i` of its stream is `i % PATTERN_PERIOD`.
pub use guest_abi::console::PATTERN_PERIOD;
/// The pattern backend's message size (a 64 KiB receive buffer takes one message).
pub const PATTERN_CHUNK: usize = 64 * 1024;

/// The pattern backend's byte at stream offset `i` (the guest checks it the same way).
pub fn pattern_byte(i: u64) -> u8 {
    (i % PATTERN_PERIOD as u64) as u8
}

/// A wake-up flag with a condition variable.
#[derive(Default)]
struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn notify(&self) {
        *lock(&self.flag) = true;
        self.cv.notify_all();
    }
    /// Waits until notified or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let g = lock(&self.flag);
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |f| !*f)
            .unwrap_or_else(|e| e.into_inner());
        *g = false;
    }
}

/// What one port's threads share.
struct IoState {
    stream: Arc<Stream>,
    port: Arc<PortShared>,
    console: ConsoleHandle,
    out_wake: Wake,
    in_wake: Wake,
    accept_wake: Wake,
    /// Output: write what is left, then end.
    stop: AtomicBool,
    /// Input and accepting: end now.
    stop_in: AtomicBool,
    crc: Mutex<crc32fast::Hasher>,
    /// The attached client of a socket backend.
    client: Mutex<Option<Arc<UnixStream>>>,
    /// Writing to the attached client failed: the input thread takes what it sent, then
    /// lets it go.
    client_failed: AtomicBool,
    /// Bytes the output thread took from the stream but could not write (set as it ends).
    unwritten: AtomicU64,
    /// What the output thread took from the stream head and has not written yet (guarded by
    /// the port's gate where it is lent guest memory; see [`output::reclaim`]).
    held: Mutex<VecDeque<Mblk>>,
    /// Bytes in `held`.
    held_bytes: AtomicU64,
    /// A writer's batch, copied out: the messages are freed once the copy is written.
    inflight: Mutex<VecDeque<Mblk>>,
    /// Bytes the output thread copied out and has not written yet.
    copy_bytes: AtomicU64,
    /// The stream head said end of file (or an error).
    head_ended: AtomicBool,
    /// The output is checksummed as it is taken (every sink but a client).
    checksummed_out: bool,
    /// The input is made on demand (the pattern): nothing queued is owed to anyone.
    generated_in: bool,
    /// Bytes kept from a client that left, not yet in the stream.
    leftover: AtomicU64,
}

impl IoState {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn stopping_input(&self) -> bool {
        self.stop_in.load(Ordering::Acquire)
    }

    /// The port's name, for the log.
    fn name(&self) -> &str {
        &self.port.config.name
    }

    fn set_client(&self, c: Option<Arc<UnixStream>>) {
        let open = c.is_some();
        *lock(&self.client) = c;
        self.client_failed.store(false, Ordering::Release);
        self.console.set_host_open(self.port.id, open);
        self.out_wake.notify();
        self.in_wake.notify();
        self.accept_wake.notify();
    }

    /// Forgets client `c` if it is still the attached one. Only the input thread calls
    /// this (it alone reads the client), after taking what the client sent.
    fn drop_client(&self, c: &Arc<UnixStream>) {
        let same = lock(&self.client)
            .as_ref()
            .is_some_and(|x| Arc::ptr_eq(x, c));
        if same {
            let _ = c.shutdown(std::net::Shutdown::Both);
            self.set_client(None);
        }
    }

    /// The output side could not write to client `c`: the input thread lets it go once it
    /// has read what `c` sent.
    fn client_write_failed(&self, c: &Arc<UnixStream>) {
        let same = lock(&self.client)
            .as_ref()
            .is_some_and(|x| Arc::ptr_eq(x, c));
        if same {
            self.client_failed.store(true, Ordering::Release);
            self.in_wake.notify();
        }
    }

    /// The attached client, unless writing to it failed.
    fn writable_client(&self) -> Option<Arc<UnixStream>> {
        if self.client_failed.load(Ordering::Acquire) {
            return None;
        }
        self.client()
    }

    fn client(&self) -> Option<Arc<UnixStream>> {
        lock(&self.client).clone()
    }
}

/// Where output goes.
enum Sink {
    /// Discarded after counting and checksumming.
    Discard,
    /// A file, stdout or a pty master.
    Writer(File),
    /// The socket's attached client.
    Client,
    /// Back into the port: the guest reads what it wrote.
    Echo,
}

/// Where input comes from.
enum Source {
    None,
    /// A file or stdin (ends at end of file).
    Reader(File),
    /// A pty master (window size changes polled too).
    Pty(File),
    /// stdin on a terminal in raw mode (window size polled, the escape key watched).
    Terminal(File),
    /// The socket's attached client.
    Client,
    /// The endless pattern.
    Pattern,
}

/// A running backend of one port.
pub struct PortIo {
    state: Arc<IoState>,
    threads: Vec<JoinHandle<()>>,
    output: Option<JoinHandle<()>>,
    /// The pty's slave path, or the socket's path.
    pub path: Option<PathBuf>,
    socket: Option<PathBuf>,
    /// Whether the output is checksummed (`null`, `pattern`, `file`).
    checksummed: bool,
}

impl PortIo {
    /// Starts `kind` on port `id` of `console`, whose stream is `stream`.
    pub fn start(
        console: &ConsoleHandle,
        stream: Arc<Stream>,
        id: u32,
        kind: &BackendKind,
    ) -> Result<PortIo, ConsoleError> {
        let port = console.port(id).ok_or(ConsoleError::NoPort(id))?.clone();
        let name = port.config.name.clone();
        let state = Arc::new(IoState {
            stream,
            port,
            console: console.clone(),
            out_wake: Wake::default(),
            in_wake: Wake::default(),
            accept_wake: Wake::default(),
            stop: AtomicBool::new(false),
            stop_in: AtomicBool::new(false),
            crc: Mutex::new(crc32fast::Hasher::new()),
            held: Mutex::new(VecDeque::new()),
            held_bytes: AtomicU64::new(0),
            inflight: Mutex::new(VecDeque::new()),
            copy_bytes: AtomicU64::new(0),
            head_ended: AtomicBool::new(false),
            checksummed_out: !matches!(kind, BackendKind::Socket(_) | BackendKind::Connect(_)),
            generated_in: matches!(kind, BackendKind::Pattern),
            client: Mutex::new(None),
            client_failed: AtomicBool::new(false),
            unwritten: AtomicU64::new(0),
            leftover: AtomicU64::new(0),
        });
        let s = state.clone();
        state.stream.head().set_notify(move || s.out_wake.notify());
        let weak = Arc::downgrade(&state);
        state.port.lent.set_reclaim(Box::new(move |reset| {
            if let Some(s) = weak.upgrade() {
                output::reclaim(&s, reset);
            }
        }));
        let s = state.clone();
        state.stream.head().set_writable(move || s.in_wake.notify());
        let err = |what: &str, p: &PathBuf, e: io::Error| ConsoleError::Backend {
            port: name.clone(),
            what: format!("{what} {}", p.display()),
            source: e,
        };
        let failed = |what: &str, e: io::Error| ConsoleError::Backend {
            port: name.clone(),
            what: what.into(),
            source: e,
        };
        let mut path = None;
        let mut socket = None;
        let mut threads = Vec::new();
        let (sink, source) = match kind {
            BackendKind::Null => (Sink::Discard, Source::None),
            BackendKind::Pattern => (Sink::Discard, Source::Pattern),
            BackendKind::Echo => (Sink::Echo, Source::None),
            BackendKind::Stdio => {
                let dup = |f: std::os::fd::BorrowedFd<'_>| {
                    f.try_clone_to_owned()
                        .map(File::from)
                        .map_err(|e| failed("stdio", e))
                };
                use std::os::fd::AsFd;
                let out = dup(io::stdout().as_fd())?;
                let inp = dup(io::stdin().as_fd())?;
                let stdin = terminal::enter_raw(&inp).map_err(|e| failed("stdin's terminal", e))?;
                let source = match stdin {
                    terminal::Stdin::Raw => Source::Terminal(inp),
                    terminal::Stdin::NotATerminal => Source::Reader(inp),
                    terminal::Stdin::Background => {
                        log::info!(
                            "port {name}: stdin is the terminal of a background job: not read"
                        );
                        Source::None
                    }
                };
                (Sink::Writer(out), source)
            }
            BackendKind::File { out, input } => {
                // The input first: a port that cannot start leaves OUT as it was.
                let i = match input {
                    Some(p) => Source::Reader(File::open(p).map_err(|e| err("cannot open", p, e))?),
                    None => Source::None,
                };
                let o = File::create(out).map_err(|e| err("cannot create", out, e))?;
                (Sink::Writer(o), i)
            }
            BackendKind::Pty => {
                let (master, slave) = pty::open().map_err(|e| failed("cannot open a pty", e))?;
                let out = master.try_clone().map_err(|e| failed("pty", e))?;
                path = Some(slave);
                (Sink::Writer(out), Source::Pty(master))
            }
            BackendKind::Connect(p) => {
                let c = UnixStream::connect(p).map_err(|e| err("cannot connect to", p, e))?;
                // Written without blocking: see `output`.
                c.set_nonblocking(true)
                    .map_err(|e| err("cannot connect to", p, e))?;
                state.set_client(Some(Arc::new(c)));
                (Sink::Client, Source::Client)
            }
            BackendKind::Socket(p) => {
                let l = listen(p).map_err(|e| err("cannot listen on", p, e))?;
                let s = state.clone();
                threads.push(spawn(&name, "accept", move || accept_loop(&s, l))?);
                socket = Some(p.clone());
                path = Some(p.clone());
                (Sink::Client, Source::Client)
            }
        };
        if !matches!(kind, BackendKind::Socket(_) | BackendKind::Connect(_)) {
            console.set_host_open(id, true);
        }
        let checksummed = matches!(
            kind,
            BackendKind::Null | BackendKind::Pattern | BackendKind::File { .. }
        );
        let s = state.clone();
        let output = Some(spawn(&name, "out", move || output::output_loop(&s, sink))?);
        if !matches!(source, Source::None) {
            let s = state.clone();
            threads.push(spawn(&name, "in", move || input_loop(&s, source))?);
        }
        Ok(PortIo {
            state,
            threads,
            output,
            path,
            socket,
            checksummed,
        })
    }

    /// CRC-32 of everything written out so far (for checksummed backends).
    pub fn out_crc(&self) -> Option<u32> {
        self.checksummed
            .then(|| lock(&self.state.crc).clone().finalize())
    }

    /// Bytes not delivered to this backend: waiting at the stream head, held by the output
    /// thread, or taken by it and not written when it ended.
    pub fn pending(&self) -> u64 {
        let queued = self
            .state
            .stream
            .queue(0, streams::Side::Read)
            .map_or(0, |q| q.count() as u64);
        queued
            + self.state.held_bytes.load(Ordering::Acquire)
            + self.state.copy_bytes.load(Ordering::Acquire)
            + self.state.unwritten.load(Ordering::Acquire)
    }

    /// Host bytes not yet delivered to the guest: in the stream's write queues (from the
    /// head down to the driver) or kept from a client that left.
    pub fn pending_in(&self) -> u64 {
        if self.state.generated_in {
            return 0;
        }
        let queued: u64 = (0..)
            .map_while(|pos| self.state.stream.queue(pos, streams::Side::Write))
            .map(|q| q.count() as u64)
            .sum();
        queued + self.state.leftover.load(Ordering::Acquire)
    }

    /// Stops reading input and accepting clients.
    pub fn stop_input(&self) {
        self.state.stop_in.store(true, Ordering::Release);
        self.state.in_wake.notify();
        self.state.accept_wake.notify();
    }

    /// Stops the backend: output already in the stream is written out until `deadline` (if
    /// anyone can take it); then the threads end. Returns the bytes left undelivered each way
    /// (output, then input) and the output's checksum.
    pub fn finish(mut self, deadline: Instant) -> (u64, u64, Option<u32>) {
        self.stop_input();
        terminal::restore();
        self.state.stop.store(true, Ordering::Release);
        self.state.out_wake.notify();
        self.state.in_wake.notify();
        self.state.accept_wake.notify();
        if let Some(o) = self.output.take() {
            while !o.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !o.is_finished()
                && let Some(c) = self.state.client()
            {
                let _ = c.shutdown(std::net::Shutdown::Both); // unblock a stuck write
            }
            if o.is_finished() {
                let _ = o.join();
            }
        }
        // The input thread polls the client in 100 ms steps: end its wait now (output is done).
        if let Some(c) = self.state.client() {
            let _ = c.shutdown(std::net::Shutdown::Read);
        }
        for t in self.threads.drain(..) {
            let until = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
        (self.pending(), self.pending_in(), self.out_crc())
    }
}

fn spawn(
    port: &str,
    what: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ConsoleError> {
    std::thread::Builder::new()
        .name(format!("port-{port}-{what}"))
        .spawn(f)
        .map_err(|e| ConsoleError::Backend {
            port: port.into(),
            what: "cannot start a thread".into(),
            source: e,
        })
}

/// Listens on `p`, replacing a stale socket file: never anything else, and never a socket
/// that a live process still listens on (another VMM's port or control socket).
pub fn listen(p: &std::path::Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if !m.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
        match UnixStream::connect(p) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on it",
                ));
            }
            // Nobody listens: a socket file left behind by a process that is gone.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(p)?,
            Err(e) => return Err(e),
        }
    }
    UnixListener::bind(p)
}

fn accept_loop(st: &IoState, l: UnixListener) {
    while !st.stopping_input() {
        if st.client().is_some() {
            st.accept_wake.wait(Duration::from_millis(100));
            continue;
        }
        if !pty::readable(&l, 100) {
            continue;
        }
        if let Ok((c, _)) = l.accept() {
            // Written without blocking: see `output`.
            if c.set_nonblocking(true).is_err() {
                continue;
            }
            st.port.counters.connects.fetch_add(1, Ordering::Relaxed);
            log::info!("port {}: a client connected", st.name());
            st.set_client(Some(Arc::new(c)));
        }
    }
}

fn input_loop(st: &Arc<IoState>, mut source: Source) {
    let c = &st.port.counters;
    let streams = &st.console.0.streams;
    let mut pattern: Option<Mblk> = None;
    let mut offset = 0u64;
    let mut last_size = None;
    // What a client that left had sent and the stream could not take yet.
    let mut leftover: Vec<u8> = Vec::new();
    let mut escape = terminal::Escape::default();
    while !st.stopping_input() {
        if let Some(cl) = st.client()
            && st.client_failed.load(Ordering::Acquire)
        {
            take_leftover(st, &cl, &mut leftover);
            st.drop_client(&cl);
        }
        if let Source::Pty(f) | Source::Terminal(f) = &source {
            let ws = pty::window_size(f);
            if let Some((cols, rows)) = ws
                && ws != last_size
            {
                last_size = ws;
                st.console.set_size(st.port.id, cols, rows);
            }
        }
        if !st.stream.canwrite() {
            st.in_wake.wait(Duration::from_millis(100));
            continue;
        }
        if let Source::Pattern = source {
            let master = match &pattern {
                Some(m) => m,
                None => {
                    let Some(m) = pattern_master(streams) else {
                        allocation_failed(st, PATTERN_CHUNK + PATTERN_PERIOD);
                        continue;
                    };
                    pattern.insert(m)
                }
            };
            let Some(mut m) = master.dupb() else {
                // Every reference the master's data block allows is out, in messages the
                // device has not consumed yet (some may wait at a busy perimeter, where
                // `canwrite` does not see them): wait for them as for flow control. Not an
                // allocation failure, so not counted as one.
                st.in_wake.wait(Duration::from_millis(1));
                continue;
            };
            let at = (offset % PATTERN_PERIOD as u64) as usize;
            m.set_ptrs(at, at + PATTERN_CHUNK)
                .expect("the master is long enough");
            offset += PATTERN_CHUNK as u64;
            c.in_bytes
                .fetch_add(PATTERN_CHUNK as u64, Ordering::Relaxed);
            let _ = st.stream.putmsg(m);
            continue;
        }
        let Some(mut m) = streams.allocb(READ_CHUNK) else {
            allocation_failed(st, READ_CHUNK);
            continue;
        };
        let cap = m.capacity();
        m.set_ptrs(0, cap).expect("whole buffer");
        if !leftover.is_empty() {
            // Before anything newer: the bytes a client sent before it left.
            let n = leftover.len().min(cap);
            m.data_mut().expect("a fresh block")[..n].copy_from_slice(&leftover[..n]);
            leftover.drain(..n);
            st.leftover.store(leftover.len() as u64, Ordering::Release);
            m.set_ptrs(0, n).expect("within the block");
            let _ = HostPlatform::run_inline(streams, || st.stream.putmsg(m));
            continue;
        }
        let client = match &source {
            Source::Client => match st.client() {
                Some(cl) => Some(cl),
                None => {
                    st.in_wake.wait(Duration::from_millis(100));
                    continue;
                }
            },
            _ => None,
        };
        let fd_ready = match (&source, &client) {
            (_, Some(cl)) => pty::readable(&**cl, 100),
            (Source::Reader(f) | Source::Pty(f) | Source::Terminal(f), _) => pty::readable(f, 100),
            _ => false,
        };
        if !fd_ready {
            continue;
        }
        if let Source::Terminal(f) = &mut source {
            // Keys: the escape is taken out before anything reaches the guest.
            let mut keys = [0u8; 1024];
            let n = match f.read(&mut keys) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let mut kept = Vec::with_capacity(n + 1);
            if escape.filter(&keys[..n], &mut kept) {
                log::info!("port {}: Ctrl-A x: ending the run", st.name());
                st.console.quit();
                return;
            }
            if kept.is_empty() {
                continue;
            }
            c.in_bytes.fetch_add(kept.len() as u64, Ordering::Relaxed);
            m.data_mut().expect("a fresh block")[..kept.len()].copy_from_slice(&kept);
            m.set_ptrs(0, kept.len()).expect("within the block");
            let _ = HostPlatform::run_inline(streams, || st.stream.putmsg(m));
            continue;
        }
        let buf = m.data_mut().expect("a fresh block");
        let r = match (&mut source, &client) {
            (_, Some(cl)) => (&**cl).read(buf),
            (Source::Reader(f) | Source::Pty(f), _) => f.read(buf),
            _ => Ok(0),
        };
        match r {
            Ok(0) => match (&source, client) {
                (_, Some(cl)) => {
                    log::info!("port {}: the client left", st.name());
                    st.drop_client(&cl)
                }
                (Source::Pty(_), _) => std::thread::sleep(Duration::from_millis(100)),
                _ => return, // end of file
            },
            Ok(n) => {
                st.port.stages.stamp(HostPoint::Read);
                m.set_ptrs(0, n).expect("within the block");
                c.in_bytes.fetch_add(n as u64, Ordering::Relaxed);
                // The device's service copies it into the guest's buffers in this thread: for
                // pingpong 64 B 202 -> 182 us, rx 64 KiB 1.2 -> 1.4 GiB/s (BENCHMARKS.md).
                let _ = HostPlatform::run_inline(streams, || st.stream.putmsg(m));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => match (&source, client) {
                (_, Some(cl)) => {
                    log::warn!(
                        "port {}: reading from the client failed ({e}); it is let go",
                        st.name()
                    );
                    take_leftover(st, &cl, &mut leftover);
                    st.drop_client(&cl);
                }
                // A pty without a slave open reads EIO: wait for one.
                (Source::Pty(_), _) => std::thread::sleep(Duration::from_millis(100)),
                _ => return,
            },
        }
    }
}

/// Reads everything client `cl` sent that is still in its socket into `leftover` (up to
/// [`LEFTOVER_MAX`] bytes held; past that, counted in `drops`). The socket is shut first, so
/// that a client still sending cannot make this last.
fn take_leftover(st: &IoState, cl: &UnixStream, leftover: &mut Vec<u8>) {
    let c = &st.port.counters;
    let _ = cl.shutdown(std::net::Shutdown::Both);
    if cl.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match (&mut &*cl).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                c.in_bytes.fetch_add(n as u64, Ordering::Relaxed);
                let keep = n.min(LEFTOVER_MAX.saturating_sub(leftover.len()));
                leftover.extend_from_slice(&buf[..keep]);
                st.leftover.store(leftover.len() as u64, Ordering::Release);
                if keep < n {
                    c.drops.fetch_add((n - keep) as u64, Ordering::Relaxed);
                    limited!(
                        log::Level::Warn,
                        "port {}: {} bytes a departing client sent did not fit the {} kept for \
                         the guest; dropped (counted in drops)",
                        st.name(),
                        n - keep,
                        LEFTOVER_MAX
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The pattern's bytes, owned by the message that wraps them (freed with it, or at once if
/// wrapping fails).
struct PatternBytes {
    addr: usize,
    len: usize,
}

impl Drop for PatternBytes {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.addr as *mut u8, self.len);
        // SAFETY: `addr..addr + len` came from `Box::into_raw` in `pattern_master`, and only
        // this value, dropped once, gives it back.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// The pattern backend's source block: the pattern long enough for any window. Like a
/// device's ROM it lies outside the buffer pool (`esballoc`), so `--fault pool=` limits the
/// device's buffers, not the benchmark's source; faults of the pool still apply to it.
fn pattern_master(streams: &streams::Streams) -> Option<Mblk> {
    let len = PATTERN_CHUNK + PATTERN_PERIOD;
    let bytes: Box<[u8]> = (0..len as u64).map(pattern_byte).collect();
    let addr = Box::into_raw(bytes) as *mut u8;
    let owner = PatternBytes {
        addr: addr as usize,
        len,
    };
    // SAFETY: `addr..addr + len` is a live allocation that only `owner` frees, and `owner`
    // moves into the free routine, which runs after the last reference to the message is
    // gone (or is dropped at once if the allocation fails).
    unsafe { streams.esballoc(addr, len, Box::new(move || drop(owner))) }
}

/// Counts a failed allocation and waits for the bufcall it registers (or 100 ms).
fn allocation_failed(st: &Arc<IoState>, size: usize) {
    st.port
        .counters
        .allocb_failures
        .fetch_add(1, Ordering::Relaxed);
    let s = st.clone();
    let _ = st.stream.bufcall(size, move || {
        s.port
            .counters
            .bufcall_retries
            .fetch_add(1, Ordering::Relaxed);
        s.in_wake.notify();
    });
    st.in_wake.wait(Duration::from_millis(100));
}
