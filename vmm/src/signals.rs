//! SIGINT, SIGTERM and SIGHUP during a run. The first one asks the run to stop as a timeout
//! does: the vCPUs stop, the backends get a short while to take what the guest sent, the
//! statistics are printed and the socket files removed; perimeter then exits with 128 + the
//! signal's number (130, 143, 129). A second one ends the process at once with that status.
//! Either way a terminal a `stdio` port put in raw mode is restored first.

use signal_hook::SigId;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The signals that stop a run.
pub const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The stop signals' handlers while a run lasts (removed when dropped).
pub struct StopSignals {
    received: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> io::Result<StopSignals> {
        let received = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in STOP_SIGNALS {
            // Handlers run in the order they were registered: the terminal first, so that
            // the exit on a second signal leaves it as it was.
            // SAFETY: `terminal::restore` is async-signal-safe (an atomic swap and one ioctl;
            // it neither allocates nor locks).
            ids.push(unsafe {
                signal_hook::low_level::register(
                    sig,
                    device_model::console::backend::terminal::restore,
                )
            }?);
            // In this order: the second signal finds `armed` set by the first.
            ids.push(signal_hook::flag::register_conditional_shutdown(
                sig,
                128 + sig,
                armed.clone(),
            )?);
            ids.push(signal_hook::flag::register_usize(
                sig,
                received.clone(),
                sig as usize,
            )?);
            ids.push(signal_hook::flag::register(sig, armed.clone())?);
        }
        Ok(StopSignals { received, ids })
    }

    /// The stop signal that arrived, if one did.
    pub fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig as i32),
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// A signal's name, for the one line that says why the run stopped.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
