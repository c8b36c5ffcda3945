//! The control socket (`--control PATH`): look at and change a running VM from a script or
//! from `perimeter ctl`.
//!
//! A UNIX stream socket. Each line a client sends is one request, a JSON object
//! (`{"cmd":"remove","port":"log"}`) or the same in words (`remove log`); each answer is one
//! line of JSON, `{"ok":true,...}` or `{"ok":false,"error":"..."}`:
//!
//! | request | what it does and answers |
//! |---|---|
//! | `ports` | every port: name, backend, path (pty, socket), plugged, open on each side, counters |
//! | `stats` | the console's and COM1's statistics, as `perimeter run --stats --json` prints them at exit |
//! | `add NAME` | plugs a removed or `unplugged` port in (DEVICE_ADD); the guest sets it up as at boot |
//! | `remove NAME` | removes the port (DEVICE_REMOVE); the guest's driver hangs up its stream |
//! | `shutdown` | ends the run as a stop signal does, with status 0 |
//!
//! Up to [`MAX_CLIENTS`] clients are served at once by one thread. A line longer than
//! [`MAX_LINE`] bytes, or not UTF-8, gets a short error.
//!
//! | part | what it holds |
//! |---|---|
//! | `protocol` | requests, their answers, and what each does to the console |
//! | `server` | the listening socket and its clients, driven by epoll |
//! | `client` | `perimeter ctl`: one request, its answer on stdout |

pub mod client;
mod protocol;
mod server;

pub use protocol::{Context, Request};

use crate::error::{Error, Outcome};
use event_manager::{EventManager, EventOps, EventSubscriber, Events, SubscriberOps};
use server::Server;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The longest request line, newline included.
pub const MAX_LINE: usize = 4096;
/// Clients served at once; one more is told so and closed.
pub const MAX_CLIENTS: usize = 16;

/// A listening control socket and the thread that serves it.
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// Wakes the server's thread to look at its stop flag.
struct Wake(EventFd);

impl EventSubscriber for Wake {
    fn init(&self, ops: &mut EventOps) {
        ops.add(Events::new(&self.0, EventSet::IN))
            .expect("a fresh epoll accepts an eventfd");
    }
    fn process(&self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.read();
    }
}

type Subscriber = Arc<dyn EventSubscriber + Send + Sync>;

impl ControlSocket {
    /// Listens on `path` (a stale socket file is replaced; anything else, or a socket a
    /// live process listens on, refused) and serves clients until dropped; `shutdown` sends
    /// [`Outcome::Shutdown`] to `outcome`.
    pub fn start(path: &Path, ctx: Context, outcome: Sender<Outcome>) -> Result<Self, Error> {
        let listener = device_model::console::backend::listen(path)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| Error::Control {
                path: path.to_path_buf(),
                source,
            })?;
        let host = |what| move |e: std::io::Error| Error::Host { what, source: e };
        let mut em = EventManager::<Subscriber>::new().map_err(|e| {
            host("the control socket's epoll")(std::io::Error::other(format!("{e:?}")))
        })?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(host("the control socket's eventfd"))?;
        em.add_subscriber(Arc::new(Wake(
            wake.try_clone()
                .map_err(host("the control socket's eventfd"))?,
        )));
        em.add_subscriber(Arc::new(Server::new(listener, ctx, outcome)));
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    if let Err(e) = em.run() {
                        log::error!("control socket: its event loop failed ({e:?})");
                        return;
                    }
                }
            })
            .map_err(host("starting the control socket's thread"))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests;
